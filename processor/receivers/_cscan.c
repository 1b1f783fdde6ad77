/*
 * apiusage.processor.receivers._cscan -- a protobuf wire-format scanner for
 * opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.
 *
 * It walks the wire format directly and returns only the fields the
 * processor needs, as Python tuples (see scan.py for the contract; the
 * pure-Python PyScanner there is the reference implementation and both
 * must return identical results whenever protobuf accepts the payload).
 *
 * Design notes
 *  - Input is untrusted.  Every read is bounds-checked against the end of
 *    the enclosing message; lengths are compared against the bytes left
 *    before any pointer arithmetic.
 *  - The message nesting we descend into is fixed (request > ResourceSpans
 *    > Resource/ScopeSpans > Span > KeyValue/Status > AnyValue, and for a
 *    span array key's array value > ArrayValue > AnyValue, and with
 *    event_names Span > Event > KeyValue > AnyValue), so there is no
 *    recursion.  Everything else (links, events without event_names or of
 *    other names or past max_events + 1, kvlist values, arrays nested in
 *    arrays, unknown fields) is skipped by length; unknown groups
 *    are skipped iteratively with a bounded explicit stack.
 *  - Semantics follow upb (the protobuf runtime behind the Python
 *    package): fields in any order, last occurrence of a scalar wins,
 *    repeated occurrences of a singular message field merge, a known field
 *    number with an unexpected wire type is treated as an unknown field,
 *    tags longer than 5 bytes / above 2^32-1 / with field number 0 (except
 *    inside unknown groups, where upb allows it) are
 *    errors, varints longer than 10 bytes are errors (extra high bits of a
 *    10-byte varint are dropped), enums are the low 32 bits as int32.
 *  - Attribute keys are matched against the wanted keys as raw UTF-8
 *    (bucketed by length, then memcmp); Python objects are only created
 *    for values that are returned.
 *  - Memory: a span tuple costs ~200 bytes for 2 bytes of wire data, so a
 *    Scanner built with max_spans > 0 refuses a request before building
 *    its (max_spans+1)-th span tuple (or resource tuple: an empty
 *    ResourceSpans is 2 bytes too); peak memory is then bounded by
 *    max_spans tuples of each kind whatever the body size.  Array values
 *    are skipped by length on the first walk of a KeyValue; only an array
 *    key's array is walked again, element by element, and only up to
 *    max_array_items + 1 elements (the rest is never looked at), so one
 *    huge array of tiny strings costs that many objects, not millions.
 *    Likewise a span's events: only the name of each is read until
 *    max_events + 1 of the wanted names are kept, then the rest are skipped
 *    by length, so a million tiny events cost at most that many tuples.
 *  - Reentrancy: the scanner holds the GIL throughout, but an allocation
 *    of a tuple can start a garbage collection, and gc callbacks and
 *    finalizers run Python code -- which may call scan() on the same
 *    Scanner again or let another thread do so.  So a Scanner is immutable
 *    after construction and everything a scan writes (the wanted keys'
 *    values of the current message, the output lists) belongs to that call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Exception class raised for malformed payloads; scan.py installs its
   ScanError here with _set_error_class().  ValueError until then. */
static PyObject *scan_error_class = NULL;

/* Raised when a request holds more spans than the Scanner's max_spans;
   scan.py installs TooManySpans (a ScanError) with _set_error_class(). */
static PyObject *too_many_spans_class = NULL;

/* Unknown groups nested deeper than this are rejected.  upb (protobuf's
   Python runtime) rejects anything nested more than 100 levels, so this
   never rejects a payload protobuf accepts. */
#define GROUP_STACK_MAX 1024

/* Fixed number of leading items of a span tuple. */
#define SPAN_FIXED 8

/* ------------------------------------------------------------------ */
/* Field names, used only to build error messages.                     */

enum {
    M_REQUEST, M_RESOURCE_SPANS, M_RESOURCE, M_SCOPE_SPANS, M_SPAN,
    M_STATUS, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY_VALUE, M_EVENT, M_COUNT
};

typedef struct {
    uint32_t num;
    const char *name;
} FieldName;

static const FieldName names_request[] = {{1, "resource_spans"}, {0, NULL}};
static const FieldName names_resource_spans[] = {
    {1, "resource"}, {2, "scope_spans"}, {3, "schema_url"}, {0, NULL}};
static const FieldName names_resource[] = {
    {1, "attributes"}, {2, "dropped_attributes_count"}, {3, "entity_refs"}, {0, NULL}};
static const FieldName names_scope_spans[] = {
    {1, "scope"}, {2, "spans"}, {3, "schema_url"}, {0, NULL}};
static const FieldName names_span[] = {
    {1, "trace_id"}, {2, "span_id"}, {3, "trace_state"}, {4, "parent_span_id"},
    {5, "name"}, {6, "kind"}, {7, "start_time_unix_nano"}, {8, "end_time_unix_nano"},
    {9, "attributes"}, {10, "dropped_attributes_count"}, {11, "events"},
    {12, "dropped_events_count"}, {13, "links"}, {14, "dropped_links_count"},
    {15, "status"}, {16, "flags"}, {0, NULL}};
static const FieldName names_status[] = {{2, "message"}, {3, "code"}, {0, NULL}};
static const FieldName names_key_value[] = {
    {1, "key"}, {2, "value"}, {3, "key_strindex"}, {0, NULL}};
static const FieldName names_any_value[] = {
    {1, "string_value"}, {2, "bool_value"}, {3, "int_value"}, {4, "double_value"},
    {5, "array_value"}, {6, "kvlist_value"}, {7, "bytes_value"},
    {8, "string_value_strindex"}, {0, NULL}};
static const FieldName names_array_value[] = {{1, "values"}, {0, NULL}};
static const FieldName names_event[] = {
    {1, "time_unix_nano"}, {2, "name"}, {3, "attributes"}, {4, "dropped_attributes_count"},
    {0, NULL}};

static const char *const message_names[M_COUNT] = {
    "ExportTraceServiceRequest", "ResourceSpans", "Resource", "ScopeSpans",
    "Span", "Status", "KeyValue", "AnyValue", "ArrayValue", "Event"};

static const FieldName *const message_fields[M_COUNT] = {
    names_request, names_resource_spans, names_resource, names_scope_spans,
    names_span, names_status, names_key_value, names_any_value, names_array_value,
    names_event};

/* ------------------------------------------------------------------ */
/* Errors                                                              */

typedef struct {
    const uint8_t *base;    /* start of the payload, for byte offsets */
    Py_ssize_t array_limit; /* most elements an array value returns */
} Ctx;

/* Raise "<what> (<Message>.<field>) at byte N", or "(<Message> field N)"
   for a field number the message does not declare, or "(<Message>)" when
   fnum is 0. */
static void
raise_at(const Ctx *c, const uint8_t *at, const char *what, int msg, uint32_t fnum)
{
    PyObject *exc = scan_error_class ? scan_error_class : PyExc_ValueError;
    Py_ssize_t off = (Py_ssize_t)(at - c->base);
    const char *mname = message_names[msg];
    const char *fname = NULL;
    PyObject *s;

    if (fnum != 0) {
        const FieldName *f;
        for (f = message_fields[msg]; f->name != NULL; f++) {
            if (f->num == fnum) {
                fname = f->name;
                break;
            }
        }
    }
    if (fname != NULL)
        s = PyUnicode_FromFormat("%s (%s.%s) at byte %zd", what, mname, fname, off);
    else if (fnum != 0)
        s = PyUnicode_FromFormat("%s (%s field %u) at byte %zd", what, mname,
                                 (unsigned int)fnum, off);
    else
        s = PyUnicode_FromFormat("%s (%s) at byte %zd", what, mname, off);
    if (s != NULL) {
        PyErr_SetObject(exc, s);
        Py_DECREF(s);
    }
}

/* ------------------------------------------------------------------ */
/* Wire primitives                                                     */

enum { VARINT_OK = 0, VARINT_TRUNCATED = 1, VARINT_TOO_LONG = 2 };

/* Decode a varint at p (p < end is not required).  Returns the pointer
   past it, or NULL with *err set. */
static inline const uint8_t *
read_varint(const uint8_t *p, const uint8_t *end, uint64_t *out, int *err)
{
    uint64_t v = 0;
    int i;

    if (p < end && *p < 0x80) {
        *out = *p;
        return p + 1;
    }
    for (i = 0; i < 10; i++) {
        uint64_t b;
        if (p + i >= end) {
            *err = VARINT_TRUNCATED;
            return NULL;
        }
        b = p[i];
        v |= (b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *out = v;
            return p + i + 1;
        }
    }
    *err = VARINT_TOO_LONG;
    return NULL;
}

static inline uint64_t
load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

/* Read a tag at p (p < end).  Mirrors upb: at most 5 bytes, value fits in
   32 bits, field number not 0. */
static inline const uint8_t *
read_tag(const Ctx *c, const uint8_t *p, const uint8_t *end, uint32_t *tag, int msg)
{
    uint64_t v;
    int err = VARINT_OK;
    const uint8_t *q;

    if (*p < 0x80 && *p >= 0x08) {
        *tag = *p;
        return p + 1;
    }
    q = read_varint(p, end, &v, &err);
    if (q == NULL) {
        raise_at(c, p, err == VARINT_TRUNCATED ? "truncated tag" : "invalid tag", msg, 0);
        return NULL;
    }
    if (q - p > 5 || v > 0xffffffffu) {
        raise_at(c, p, "invalid tag", msg, 0);
        return NULL;
    }
    if ((v >> 3) == 0) {
        raise_at(c, p, "invalid field number 0", msg, 0);
        return NULL;
    }
    *tag = (uint32_t)v;
    return q;
}

/* Varint value of field `fnum` (tag at tp). */
static inline const uint8_t *
field_varint(const Ctx *c, const uint8_t *tp, const uint8_t *p, const uint8_t *end,
             uint64_t *out, int msg, uint32_t fnum)
{
    int err = VARINT_OK;
    const uint8_t *q = read_varint(p, end, out, &err);
    if (q == NULL)
        raise_at(c, tp,
                 err == VARINT_TRUNCATED ? "truncated varint" : "varint longer than 10 bytes",
                 msg, fnum);
    return q;
}

/* Length prefix of a length-delimited field; checks the payload fits. */
static inline const uint8_t *
field_len(const Ctx *c, const uint8_t *tp, const uint8_t *p, const uint8_t *end,
          size_t *len, int msg, uint32_t fnum)
{
    uint64_t v;
    int err = VARINT_OK;
    const uint8_t *q = read_varint(p, end, &v, &err);
    if (q == NULL) {
        raise_at(c, tp,
                 err == VARINT_TRUNCATED ? "truncated length-delimited field"
                                         : "varint longer than 10 bytes",
                 msg, fnum);
        return NULL;
    }
    if (v > (uint64_t)(end - q)) {
        raise_at(c, tp, "truncated length-delimited field", msg, fnum);
        return NULL;
    }
    *len = (size_t)v;
    return q;
}

static inline const uint8_t *
field_fixed64(const Ctx *c, const uint8_t *tp, const uint8_t *p, const uint8_t *end,
              uint64_t *out, int msg, uint32_t fnum)
{
    if (end - p < 8) {
        raise_at(c, tp, "truncated fixed64 field", msg, fnum);
        return NULL;
    }
    *out = load_le64(p);
    return p + 8;
}

/* Skip the body of a group whose start tag (field fnum) is at tp and whose
   body starts at p.  Iterative; nested groups must close in order. */
static const uint8_t *
skip_group(const Ctx *c, const uint8_t *tp, const uint8_t *p, const uint8_t *end,
           int msg, uint32_t fnum)
{
    uint32_t stack[GROUP_STACK_MAX];
    int depth = 1;
    stack[0] = fnum;

    while (depth > 0) {
        const uint8_t *itp = p;
        uint64_t v;
        int err = VARINT_OK;
        uint32_t wt, num;

        if (p >= end) {
            raise_at(c, tp, "unterminated group", msg, fnum);
            return NULL;
        }
        p = read_varint(p, end, &v, &err);
        if (p == NULL) {
            raise_at(c, itp, err == VARINT_TRUNCATED ? "truncated tag" : "invalid tag", msg,
                     fnum);
            return NULL;
        }
        if (p - itp > 5 || v > 0xffffffffu) {
            raise_at(c, itp, "invalid tag", msg, fnum);
            return NULL;
        }
        /* upb accepts field number 0 inside unknown groups */
        num = (uint32_t)(v >> 3);
        wt = (uint32_t)(v & 7);
        switch (wt) {
        case 0:
            p = read_varint(p, end, &v, &err);
            if (p == NULL) {
                raise_at(c, itp,
                         err == VARINT_TRUNCATED ? "truncated varint"
                                                 : "varint longer than 10 bytes",
                         msg, fnum);
                return NULL;
            }
            break;
        case 1:
            if (end - p < 8) {
                raise_at(c, itp, "truncated fixed64 field", msg, fnum);
                return NULL;
            }
            p += 8;
            break;
        case 2:
            p = read_varint(p, end, &v, &err);
            if (p == NULL) {
                raise_at(c, itp,
                         err == VARINT_TRUNCATED ? "truncated length-delimited field"
                                                 : "varint longer than 10 bytes",
                         msg, fnum);
                return NULL;
            }
            if (v > (uint64_t)(end - p)) {
                raise_at(c, itp, "truncated length-delimited field", msg, fnum);
                return NULL;
            }
            p += v;
            break;
        case 3:
            if (depth >= GROUP_STACK_MAX) {
                raise_at(c, itp, "groups nested too deeply", msg, fnum);
                return NULL;
            }
            stack[depth++] = num;
            break;
        case 4:
            if (stack[depth - 1] != num) {
                raise_at(c, itp, "mismatched end-group tag", msg, fnum);
                return NULL;
            }
            depth--;
            break;
        case 5:
            if (end - p < 4) {
                raise_at(c, itp, "truncated fixed32 field", msg, fnum);
                return NULL;
            }
            p += 4;
            break;
        default: {
            char what[32];
            PyOS_snprintf(what, sizeof(what), "invalid wire type %u", (unsigned int)wt);
            raise_at(c, itp, what, msg, fnum);
            return NULL;
        }
        }
    }
    return p;
}

/* Skip a field we do not use (unknown, unneeded, or known with an
   unexpected wire type -- upb treats the latter as unknown too). */
static const uint8_t *
skip_field(const Ctx *c, const uint8_t *tp, const uint8_t *p, const uint8_t *end,
           uint32_t tag, int msg)
{
    uint32_t fnum = tag >> 3;
    uint64_t v;
    size_t n;

    switch (tag & 7) {
    case 0:
        return field_varint(c, tp, p, end, &v, msg, fnum);
    case 1:
        if (end - p < 8) {
            raise_at(c, tp, "truncated fixed64 field", msg, fnum);
            return NULL;
        }
        return p + 8;
    case 2:
        p = field_len(c, tp, p, end, &n, msg, fnum);
        return p == NULL ? NULL : p + n;
    case 3:
        return skip_group(c, tp, p, end, msg, fnum);
    case 4:
        raise_at(c, tp, "unexpected end-group tag", msg, fnum);
        return NULL;
    case 5:
        if (end - p < 4) {
            raise_at(c, tp, "truncated fixed32 field", msg, fnum);
            return NULL;
        }
        return p + 4;
    default: {
        char what[32];
        PyOS_snprintf(what, sizeof(what), "invalid wire type %u", (unsigned int)(tag & 7));
        raise_at(c, tp, what, msg, fnum);
        return NULL;
    }
    }
}

/* ------------------------------------------------------------------ */
/* UTF-8                                                               */

/* Strict UTF-8 check (same acceptance as Python's codec and upb: no
   overlong forms, no surrogates, nothing above U+10FFFF).  Returns -1 if
   valid, else the index of the first byte of the offending sequence.
   *ascii tells whether every byte is < 0x80. */
static Py_ssize_t
utf8_check(const uint8_t *s, size_t n, int *ascii)
{
    size_t i = 0;

    while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080))
            break;
        i += 8;
    }
    while (i < n && s[i] < 0x80)
        i++;
    if (i == n) {
        *ascii = 1;
        return -1;
    }
    *ascii = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t need, k;
        uint8_t lo = 0x80, hi = 0xBF;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b == 0xE0) {
            need = 2;
            lo = 0xA0;
        }
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
            need = 2;
        else if (b == 0xED) {
            need = 2;
            hi = 0x9F;
        }
        else if (b == 0xF0) {
            need = 3;
            lo = 0x90;
        }
        else if (b >= 0xF1 && b <= 0xF3)
            need = 3;
        else if (b == 0xF4) {
            need = 3;
            hi = 0x8F;
        }
        else
            return (Py_ssize_t)i;
        if (n - i <= need)
            return (Py_ssize_t)i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return (Py_ssize_t)i;
        for (k = 2; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return (Py_ssize_t)i;
        }
        i += need + 1;
    }
    return -1;
}

/* New str from UTF-8 bytes; raises ScanError naming field (msg, fnum)
   and the offending byte on invalid input. */
static PyObject *
make_str(const Ctx *c, const uint8_t *s, size_t n, int msg, uint32_t fnum)
{
    int ascii;
    Py_ssize_t bad;
    PyObject *u;

    if (n == 0)
        return PyUnicode_New(0, 0);
    bad = utf8_check(s, n, &ascii);
    if (bad >= 0) {
        raise_at(c, s + bad, "invalid UTF-8", msg, fnum);
        return NULL;
    }
    if (!ascii)
        return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
    u = PyUnicode_New((Py_ssize_t)n, 127);
    if (u != NULL)
        memcpy(PyUnicode_DATA(u), s, n);
    return u;
}

/* ------------------------------------------------------------------ */
/* Wanted-key tables                                                   */

#define KT_BUCKETS 64

typedef struct {
    const char *s;   /* UTF-8 bytes (in KeyTable.buf) */
    size_t len;
    Py_ssize_t slot; /* output position */
    int next;        /* next entry in the same length bucket, or -1 */
    int array;       /* an array key: its array values are returned (else they are None) */
} KeyEnt;

typedef struct {
    Py_ssize_t n;      /* number of output positions (= number of entries given) */
    PyObject *keys;    /* tuple of the entries as given (groups as tuples) */
    char *buf;         /* all key bytes */
    KeyEnt *ents;      /* one per distinct key */
    Py_ssize_t ndup;   /* repeated keys: (source, destination) slot pairs */
    Py_ssize_t *dup;
    int grouped;       /* entries include groups: values go to a call's KeyVals first */
    Py_ssize_t nents;
    Py_ssize_t *start; /* grouped: slot i's entries are start[i] .. start[i+1]-1, in order */
    int head[KT_BUCKETS];
} KeyTable;

/* Per-call scratch of a grouped table: each key's last value in the
   current message (kt->nents entries; NULL when the table is not
   grouped). */
typedef PyObject **KeyVals;

static void
kt_clear(KeyTable *kt)
{
    Py_CLEAR(kt->keys);
    PyMem_Free(kt->buf);
    PyMem_Free(kt->ents);
    PyMem_Free(kt->dup);
    PyMem_Free(kt->start);
    kt->buf = NULL;
    kt->ents = NULL;
    kt->dup = NULL;
    kt->start = NULL;
    kt->n = kt->ndup = kt->nents = 0;
}

/* Index of the entry for key s, or -1. */
static inline int
kt_find(const KeyTable *kt, const uint8_t *s, size_t len)
{
    int i;
    for (i = kt->head[len & (KT_BUCKETS - 1)]; i >= 0; i = kt->ents[i].next) {
        const KeyEnt *e = &kt->ents[i];
        if (e->len == len && memcmp(e->s, s, len) == 0)
            return i;
    }
    return -1;
}

/* Forget the previous message's values (grouped tables only). */
static inline void
kt_begin(const KeyTable *kt, KeyVals vals)
{
    Py_ssize_t i;
    if (!kt->grouped)
        return;
    for (i = 0; i < kt->nents; i++)
        Py_CLEAR(vals[i]);
}

/* Entries are keys (str) or groups of alternative keys (tuple or list of
   str): a group's output is the value of its first key present with a
   scalar value (or an array value, for an array key: see kt_mark_arrays).
   A key may repeat across plain entries (each position gets its value) but
   not when groups are used. */
static int
kt_init(KeyTable *kt, PyObject *seq, const char *argname)
{
    Py_ssize_t i, j, n, m = 0, total = 0, nents = 0, f;
    const char **utf8 = NULL;
    Py_ssize_t *lens = NULL, *slot_of = NULL;
    int *prio_of = NULL;
    int grouped = 0;
    char *w;
    PyObject *given;

    memset(kt, 0, sizeof(*kt));
    for (i = 0; i < KT_BUCKETS; i++)
        kt->head[i] = -1;
    if (PyUnicode_Check(seq) || PyBytes_Check(seq) || PyByteArray_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of str, not %.100s", argname,
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    given = PySequence_Tuple(seq);
    if (given == NULL)
        return -1;
    n = PyTuple_GET_SIZE(given);
    if (n > INT_MAX / 2) {
        Py_DECREF(given);
        PyErr_Format(PyExc_ValueError, "too many %s", argname);
        return -1;
    }
    kt->keys = PyTuple_New(n);
    if (kt->keys == NULL) {
        Py_DECREF(given);
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *e = PyTuple_GET_ITEM(given, i);
        if (PyTuple_Check(e) || PyList_Check(e)) {
            PyObject *g = PySequence_Tuple(e);
            if (g == NULL) {
                Py_DECREF(given);
                goto fail;
            }
            if (PyTuple_GET_SIZE(g) == 0) {
                Py_DECREF(g);
                Py_DECREF(given);
                PyErr_Format(PyExc_ValueError, "%s: a group needs at least one key", argname);
                goto fail;
            }
            grouped = 1;
            m += PyTuple_GET_SIZE(g);
            PyTuple_SET_ITEM(kt->keys, i, g);
        }
        else {
            m += 1;
            PyTuple_SET_ITEM(kt->keys, i, Py_NewRef(e));
        }
    }
    Py_DECREF(given);
    if (m > INT_MAX / 2) {
        PyErr_Format(PyExc_ValueError, "too many %s", argname);
        goto fail;
    }
    kt->n = n;
    utf8 = PyMem_Calloc((size_t)m + 1, sizeof(*utf8));
    lens = PyMem_Calloc((size_t)m + 1, sizeof(*lens));
    slot_of = PyMem_Calloc((size_t)m + 1, sizeof(*slot_of));
    prio_of = PyMem_Calloc((size_t)m + 1, sizeof(*prio_of));
    kt->ents = PyMem_Calloc((size_t)m + 1, sizeof(*kt->ents));
    kt->dup = PyMem_Calloc(2 * (size_t)m + 1, sizeof(*kt->dup));
    kt->start = PyMem_Calloc((size_t)n + 2, sizeof(*kt->start));
    if (utf8 == NULL || lens == NULL || slot_of == NULL || prio_of == NULL || kt->ents == NULL ||
        kt->dup == NULL || kt->start == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    f = 0;
    for (i = 0; i < n; i++) {
        PyObject *e = PyTuple_GET_ITEM(kt->keys, i);
        Py_ssize_t gn = PyTuple_Check(e) ? PyTuple_GET_SIZE(e) : 1;
        for (j = 0; j < gn; j++) {
            PyObject *k = PyTuple_Check(e) ? PyTuple_GET_ITEM(e, j) : e;
            if (!PyUnicode_Check(k)) {
                PyErr_Format(PyExc_TypeError, "%s must contain str, not %.100s", argname,
                             Py_TYPE(k)->tp_name);
                goto fail;
            }
            utf8[f] = PyUnicode_AsUTF8AndSize(k, &lens[f]);
            if (utf8[f] == NULL)
                goto fail;
            slot_of[f] = i;
            prio_of[f] = (int)j;
            total += lens[f];
            f++;
        }
    }
    kt->buf = PyMem_Malloc((size_t)total + 1);
    if (kt->buf == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    w = kt->buf;
    for (f = 0; f < m; f++) {
        int found = 0;
        for (j = 0; j < nents; j++) {
            if ((Py_ssize_t)kt->ents[j].len == lens[f] &&
                memcmp(kt->ents[j].s, utf8[f], (size_t)lens[f]) == 0) {
                if (grouped) {
                    PyErr_Format(PyExc_ValueError,
                                 "%s: key '%s' appears in more than one group", argname,
                                 utf8[f]);
                    goto fail;
                }
                kt->dup[2 * kt->ndup] = kt->ents[j].slot;
                kt->dup[2 * kt->ndup + 1] = slot_of[f];
                kt->ndup++;
                found = 1;
                break;
            }
        }
        if (found)
            continue;
        memcpy(w, utf8[f], (size_t)lens[f]);
        kt->ents[nents].s = w;
        kt->ents[nents].len = (size_t)lens[f];
        kt->ents[nents].slot = slot_of[f];
        if (prio_of[f] == 0)
            kt->start[slot_of[f]] = nents; /* grouped: no duplicates, so entries stay in order */
        /* append at the bucket's tail so earlier keys are tried first */
        kt->ents[nents].next = -1;
        {
            int *link = &kt->head[(size_t)lens[f] & (KT_BUCKETS - 1)];
            while (*link >= 0)
                link = &kt->ents[*link].next;
            *link = (int)nents;
        }
        w += lens[f];
        nents++;
    }
    kt->nents = nents;
    kt->grouped = grouped;
    kt->start[n] = nents;
    PyMem_Free(utf8);
    PyMem_Free(lens);
    PyMem_Free(slot_of);
    PyMem_Free(prio_of);
    return 0;

fail:
    PyMem_Free(utf8);
    PyMem_Free(lens);
    PyMem_Free(slot_of);
    PyMem_Free(prio_of);
    kt_clear(kt);
    return -1;
}

/* Mark the keys of `seq` (an iterable of str, each one of the table's
   keys) as array keys; returns the keys as a tuple, or NULL with an
   exception set.  Only an array key's array values are returned: for any
   other key an array counts as absent, as before arrays were read, so a
   group's next key is tried. */
static PyObject *
kt_mark_arrays(KeyTable *kt, PyObject *seq, const char *argname, const char *tablename)
{
    PyObject *keys;
    Py_ssize_t i, len;

    if (PyUnicode_Check(seq) || PyBytes_Check(seq) || PyByteArray_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a collection of str, not %.100s", argname,
                     Py_TYPE(seq)->tp_name);
        return NULL;
    }
    keys = PySequence_Tuple(seq);
    if (keys == NULL)
        return NULL;
    for (i = 0; i < PyTuple_GET_SIZE(keys); i++) {
        PyObject *k = PyTuple_GET_ITEM(keys, i);
        const char *s;
        int ent;

        if (!PyUnicode_Check(k)) {
            PyErr_Format(PyExc_TypeError, "%s must contain str, not %.100s", argname,
                         Py_TYPE(k)->tp_name);
            goto fail;
        }
        s = PyUnicode_AsUTF8AndSize(k, &len);
        if (s == NULL)
            goto fail;
        ent = kt_find(kt, (const uint8_t *)s, (size_t)len);
        if (ent < 0) {
            PyErr_Format(PyExc_ValueError, "%s: key %R is not one of %s", argname, k, tablename);
            goto fail;
        }
        kt->ents[ent].array = 1;
    }
    return keys;

fail:
    Py_DECREF(keys);
    return NULL;
}

/* Fill the output positions: a group's first key with a value (a scalar,
   or an array key's array, even an empty one), or the values of repeated
   keys; unset positions become None.  slots has kt->n entries. */
static inline void
kt_finish(const KeyTable *kt, KeyVals vals, PyObject **slots)
{
    Py_ssize_t i, e;
    if (kt->grouped) {
        for (i = 0; i < kt->n; i++) {
            for (e = kt->start[i]; e < kt->start[i + 1]; e++) {
                PyObject *v = vals[e];
                if (v != NULL && v != Py_None) {
                    Py_XSETREF(slots[i], Py_NewRef(v));
                    break;
                }
            }
        }
        kt_begin(kt, vals);
    }
    for (i = 0; i < kt->ndup; i++) {
        PyObject *v = slots[kt->dup[2 * i]];
        Py_XINCREF(v);
        Py_XSETREF(slots[kt->dup[2 * i + 1]], v);
    }
    for (i = 0; i < kt->n; i++) {
        if (slots[i] == NULL)
            slots[i] = Py_NewRef(Py_None);
    }
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */

enum { AV_NONE = 0, AV_STR, AV_BOOL, AV_INT, AV_DOUBLE, AV_ARRAY, AV_OTHER };

typedef struct {
    int kind;
    const uint8_t *s;
    size_t n;
    uint64_t u;
    /* AV_ARRAY: where the current run of array_value occurrences starts
       (the KeyValue.value tag holding the first one, and that one's tag) */
    const uint8_t *arr_kv;
    const uint8_t *arr_tp;
} AnyVal;

/* AnyValue; successive occurrences merge into *av (oneof: last wins).
   kv_tp is the tag of the KeyValue.value field holding it (NULL for an
   array element).  Array values are only located here: upb merges
   consecutive array_value occurrences (even across merged KeyValue.value
   occurrences) and starts afresh after another member of the oneof, so
   the run's start is all array_object() needs. */
static int
parse_any_value(const Ctx *c, const uint8_t *p, const uint8_t *end, AnyVal *av,
                const uint8_t *kv_tp)
{
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_ANY_VALUE);
        if (p == NULL)
            return -1;
        switch (tag) {
        case (1 << 3) | 2: /* string_value */
            p = field_len(c, tp, p, end, &n, M_ANY_VALUE, 1);
            if (p == NULL)
                return -1;
            av->kind = AV_STR;
            av->s = p;
            av->n = n;
            p += n;
            break;
        case (2 << 3) | 0: /* bool_value */
            p = field_varint(c, tp, p, end, &av->u, M_ANY_VALUE, 2);
            if (p == NULL)
                return -1;
            av->kind = AV_BOOL;
            break;
        case (3 << 3) | 0: /* int_value */
            p = field_varint(c, tp, p, end, &av->u, M_ANY_VALUE, 3);
            if (p == NULL)
                return -1;
            av->kind = AV_INT;
            break;
        case (4 << 3) | 1: /* double_value */
            p = field_fixed64(c, tp, p, end, &av->u, M_ANY_VALUE, 4);
            if (p == NULL)
                return -1;
            av->kind = AV_DOUBLE;
            break;
        case (5 << 3) | 2: /* array_value: elements read later, if the key is wanted */
            p = field_len(c, tp, p, end, &n, M_ANY_VALUE, 5);
            if (p == NULL)
                return -1;
            if (av->kind != AV_ARRAY) {
                av->kind = AV_ARRAY;
                av->arr_kv = kv_tp;
                av->arr_tp = tp;
            }
            p += n;
            break;
        case (6 << 3) | 2: /* kvlist_value */
        case (7 << 3) | 2: /* bytes_value */
            p = field_len(c, tp, p, end, &n, M_ANY_VALUE, tag >> 3);
            if (p == NULL)
                return -1;
            av->kind = AV_OTHER;
            p += n;
            break;
        case (8 << 3) | 0: { /* string_value_strindex */
            uint64_t ignored;
            p = field_varint(c, tp, p, end, &ignored, M_ANY_VALUE, 8);
            if (p == NULL)
                return -1;
            av->kind = AV_OTHER;
            break;
        }
        default:
            p = skip_field(c, tp, p, end, tag, M_ANY_VALUE);
            if (p == NULL)
                return -1;
        }
    }
    return 0;
}

/* A scalar value (also an array element's): nested arrays, kvlists,
   bytes, string table indexes and empty values are None. */
static PyObject *
any_value_object(const Ctx *c, const AnyVal *av)
{
    switch (av->kind) {
    case AV_STR:
        return make_str(c, av->s, av->n, M_ANY_VALUE, 1);
    case AV_BOOL:
        return PyBool_FromLong(av->u != 0);
    case AV_INT:
        return PyLong_FromLongLong((long long)(int64_t)av->u);
    case AV_DOUBLE: {
        double d;
        memcpy(&d, &av->u, sizeof(d));
        return PyFloat_FromDouble(d);
    }
    default:
        return Py_NewRef(Py_None);
    }
}

/* Append the elements of one ArrayValue to out until it holds
   c->array_limit.  Returns 1 when out is full, 0 if not, -1 on error. */
static int
collect_array(const Ctx *c, const uint8_t *p, const uint8_t *end, PyObject *out)
{
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_ARRAY_VALUE);
        if (p == NULL)
            return -1;
        if (tag == ((1 << 3) | 2)) { /* values */
            AnyVal e = {AV_NONE, NULL, 0, 0, NULL, NULL};
            PyObject *o;
            int rc;

            p = field_len(c, tp, p, end, &n, M_ARRAY_VALUE, 1);
            if (p == NULL)
                return -1;
            if (parse_any_value(c, p, p + n, &e, NULL) < 0)
                return -1;
            o = any_value_object(c, &e);
            if (o == NULL)
                return -1;
            rc = PyList_Append(out, o);
            Py_DECREF(o);
            if (rc < 0)
                return -1;
            if (PyList_GET_SIZE(out) >= c->array_limit)
                return 1; /* the rest is never looked at */
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_ARRAY_VALUE);
            if (p == NULL)
                return -1;
        }
    }
    return 0;
}

/* The array_value fields of AnyValue bytes [p, end) into out (see
   collect_array). */
static int
collect_any_value(const Ctx *c, const uint8_t *p, const uint8_t *end, PyObject *out)
{
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;
        int rc;

        p = read_tag(c, p, end, &tag, M_ANY_VALUE);
        if (p == NULL)
            return -1;
        if (tag == ((5 << 3) | 2)) {
            p = field_len(c, tp, p, end, &n, M_ANY_VALUE, 5);
            if (p == NULL)
                return -1;
            rc = collect_array(c, p, p + n, out);
            if (rc != 0)
                return rc;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_ANY_VALUE);
            if (p == NULL)
                return -1;
        }
    }
    return 0;
}

/* An array value as a tuple: the elements of its run of array_value
   occurrences (av->arr_kv .. av->arr_tp .. the KeyValue's end kv_end),
   converted like scalars, at most c->array_limit of them.  No other
   member of the oneof follows the run's start, so every array_value from
   there on belongs to it.  A second walk, over bytes the first one has
   checked, so that only wanted arrays cost anything beyond their length. */
static PyObject *
array_object(const Ctx *c, const AnyVal *av, const uint8_t *kv_end)
{
    const uint8_t *p = av->arr_kv;
    PyObject *out, *t;
    uint32_t tag;
    size_t n;
    int rc;

    if (c->array_limit == 0)
        return PyTuple_New(0);
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    p = read_tag(c, p, kv_end, &tag, M_KEY_VALUE);
    if (p == NULL)
        goto fail;
    p = field_len(c, av->arr_kv, p, kv_end, &n, M_KEY_VALUE, 2);
    if (p == NULL)
        goto fail;
    rc = collect_any_value(c, av->arr_tp, p + n, out);
    p += n;
    while (rc == 0 && p < kv_end) {
        const uint8_t *tp = p;

        p = read_tag(c, p, kv_end, &tag, M_KEY_VALUE);
        if (p == NULL)
            goto fail;
        if (tag == ((2 << 3) | 2)) { /* value: merges into the same AnyValue */
            p = field_len(c, tp, p, kv_end, &n, M_KEY_VALUE, 2);
            if (p == NULL)
                goto fail;
            rc = collect_any_value(c, p, p + n, out);
            p += n;
        }
        else {
            p = skip_field(c, tp, p, kv_end, tag, M_KEY_VALUE);
            if (p == NULL)
                goto fail;
        }
    }
    if (rc < 0)
        goto fail;
    t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;

fail:
    Py_DECREF(out);
    return NULL;
}

/* The value of key e, an array: array_object() for an array key; for any
   other key an array is absent (None), and never walked.  Kept out of line
   so that the scalar path of parse_key_value stays as short as it was. */
Py_NO_INLINE static PyObject *
array_value(const Ctx *c, const KeyEnt *e, const AnyVal *av, const uint8_t *kv_end)
{
    return e->array ? array_object(c, av, kv_end) : Py_NewRef(Py_None);
}

static const uint8_t empty_key[1] = {0};

/* One KeyValue: if its key is wanted, store its converted value in the
   key's slot (replacing an earlier occurrence). */
static int
parse_key_value(const Ctx *c, const KeyTable *kt, KeyVals vals, PyObject **slots,
                const uint8_t *p, const uint8_t *end)
{
    const uint8_t *key = empty_key;
    size_t keylen = 0;
    AnyVal av = {AV_NONE, NULL, 0, 0, NULL, NULL};
    int ent;
    int ascii;
    Py_ssize_t bad;
    PyObject *obj;

    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_KEY_VALUE);
        if (p == NULL)
            return -1;
        if (tag == ((1 << 3) | 2)) { /* key */
            p = field_len(c, tp, p, end, &n, M_KEY_VALUE, 1);
            if (p == NULL)
                return -1;
            key = p;
            keylen = n;
            p += n;
        }
        else if (tag == ((2 << 3) | 2)) { /* value */
            p = field_len(c, tp, p, end, &n, M_KEY_VALUE, 2);
            if (p == NULL)
                return -1;
            if (parse_any_value(c, p, p + n, &av, tp) < 0)
                return -1;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_KEY_VALUE);
            if (p == NULL)
                return -1;
        }
    }
    bad = utf8_check(key, keylen, &ascii);
    if (bad >= 0) {
        raise_at(c, key + bad, "invalid UTF-8", M_KEY_VALUE, 1);
        return -1;
    }
    ent = kt_find(kt, key, keylen);
    if (ent < 0)
        return 0;
    obj = av.kind == AV_ARRAY ? array_value(c, &kt->ents[ent], &av, end) : any_value_object(c, &av);
    if (obj == NULL)
        return -1;
    if (kt->grouped)
        Py_XSETREF(vals[ent], obj); /* resolved per group in kt_finish */
    else
        Py_XSETREF(slots[kt->ents[ent].slot], obj);
    return 0;
}

/* Resource (occurrences merge: attributes accumulate). */
static int
parse_resource(const Ctx *c, const KeyTable *kt, KeyVals vals, PyObject **slots,
               const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_RESOURCE);
        if (p == NULL)
            return -1;
        if (tag == ((1 << 3) | 2)) { /* attributes */
            p = field_len(c, tp, p, end, &n, M_RESOURCE, 1);
            if (p == NULL)
                return -1;
            if (parse_key_value(c, kt, vals, slots, p, p + n) < 0)
                return -1;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_RESOURCE);
            if (p == NULL)
                return -1;
        }
    }
    return 0;
}

/* Status (occurrences merge: the last `code` wins). */
static int
parse_status(const Ctx *c, const uint8_t *p, const uint8_t *end, uint64_t *code)
{
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;

        p = read_tag(c, p, end, &tag, M_STATUS);
        if (p == NULL)
            return -1;
        if (tag == ((3 << 3) | 0))
            p = field_varint(c, tp, p, end, code, M_STATUS, 3);
        else
            p = skip_field(c, tp, p, end, tag, M_STATUS);
        if (p == NULL)
            return -1;
    }
    return 0;
}

typedef struct {
    PyObject_HEAD
    KeyTable span_kt; /* read-only after Scanner_new */
    KeyTable res_kt;
    Py_ssize_t max_spans; /* 0: unlimited */
    Py_ssize_t max_array_items;
    PyObject *array_keys; /* tuple, as given */
    /* Span events: returned when event_names is not empty (has_events). */
    int has_events;
    KeyTable name_kt;      /* event names: plain str entries, a name's entry gives its str */
    KeyTable event_kt;     /* keys read from a returned event's attributes */
    Py_ssize_t max_events;
    Py_ssize_t event_limit; /* max_events + 1: one more tells the caller the list was cut */
} ScannerObject;

/* One scan() call's state besides the position (see "Reentrancy" above). */
typedef struct {
    Ctx c;
    const ScannerObject *self;
    KeyVals span_vals;
    KeyVals res_vals;
    KeyVals event_vals;
} Call;

/* The low 32 bits of a varint as a signed int32 (protobuf enum/int32). */
static inline long
as_int32(uint64_t v)
{
    uint32_t u = (uint32_t)v;
    return (long)((int64_t)u - (u >= 0x80000000u ? INT64_C(0x100000000) : 0));
}

static PyObject *
bytes_or_empty(const uint8_t *s, size_t n)
{
    return PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n);
}

/* Raise TooManySpans: "more than <max_spans> <what> in one request". */
static void
raise_too_many(const char *what, Py_ssize_t max_spans)
{
    PyObject *exc = too_many_spans_class ? too_many_spans_class
                    : scan_error_class   ? scan_error_class
                                         : PyExc_ValueError;
    PyErr_Format(exc, "more than %zd %s in one request", max_spans, what);
}

/* One Event (a span's field 11).  A first walk finds its name (the last
   occurrence wins) and skips everything else by length; only an event whose
   name is wanted is walked again for its attributes, so the events of other
   names cost no objects, and their attributes are never looked at.  A
   wanted event is appended to *events (a list made on the first one) as
   (name, v_0, ..., v_{k-1}). */
static int
parse_event(const Call *call, const uint8_t *start, const uint8_t *end, PyObject **events)
{
    const Ctx *c = &call->c;
    const ScannerObject *self = call->self;
    const KeyTable *kt = &self->event_kt;
    const uint8_t *p = start, *name = empty_key;
    size_t namelen = 0;
    PyObject *t;
    PyObject **items;
    int ent, rc;

    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;

        p = read_tag(c, p, end, &tag, M_EVENT);
        if (p == NULL)
            return -1;
        if (tag == ((2 << 3) | 2)) { /* name */
            p = field_len(c, tp, p, end, &namelen, M_EVENT, 2);
            if (p == NULL)
                return -1;
            name = p;
            p += namelen;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_EVENT);
            if (p == NULL)
                return -1;
        }
    }
    /* a wanted name is valid UTF-8, so a match needs no check of its own */
    ent = kt_find(&self->name_kt, name, namelen);
    if (ent < 0)
        return 0;
    t = PyTuple_New(1 + kt->n);
    if (t == NULL)
        return -1;
    items = ((PyTupleObject *)t)->ob_item;
    items[0] = Py_NewRef(PyTuple_GET_ITEM(self->name_kt.keys, self->name_kt.ents[ent].slot));
    kt_begin(kt, call->event_vals);
    p = start;
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_EVENT);
        if (p == NULL)
            goto fail;
        if (tag == ((3 << 3) | 2)) { /* attributes */
            p = field_len(c, tp, p, end, &n, M_EVENT, 3);
            if (p == NULL)
                goto fail;
            if (parse_key_value(c, kt, call->event_vals, items + 1, p, p + n) < 0)
                goto fail;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_EVENT);
            if (p == NULL)
                goto fail;
        }
    }
    kt_finish(kt, call->event_vals, items + 1);
    if (*events == NULL && (*events = PyList_New(0)) == NULL)
        goto fail;
    rc = PyList_Append(*events, t);
    Py_DECREF(t);
    return rc;

fail:
    Py_DECREF(t);
    return -1;
}

static int
parse_span(const Call *call, const uint8_t *p, const uint8_t *end, PyObject *resource_index,
           PyObject *spans)
{
    const Ctx *c = &call->c;
    const KeyTable *kt = &call->self->span_kt;
    KeyVals vals = call->span_vals;
    const uint8_t *trace_id = NULL, *span_id = NULL, *trace_state = NULL;
    size_t trace_id_len = 0, span_id_len = 0, trace_state_len = 0;
    uint64_t kind = 0, start = 0, stop = 0, code = 0;
    PyObject *t, *o, *events = NULL;
    PyObject **items;
    int rc;

    /* Checked before the tuple exists so that memory stays bounded. */
    if (call->self->max_spans > 0 && PyList_GET_SIZE(spans) >= call->self->max_spans) {
        raise_too_many("spans", call->self->max_spans);
        return -1;
    }
    t = PyTuple_New(SPAN_FIXED + kt->n + call->self->has_events);
    if (t == NULL)
        return -1;
    kt_begin(kt, vals);
    items = ((PyTupleObject *)t)->ob_item;
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_SPAN);
        if (p == NULL)
            goto fail;
        switch (tag) {
        case (9 << 3) | 2: /* attributes */
            p = field_len(c, tp, p, end, &n, M_SPAN, 9);
            if (p == NULL)
                goto fail;
            if (parse_key_value(c, kt, vals, items + SPAN_FIXED, p, p + n) < 0)
                goto fail;
            p += n;
            break;
        case (1 << 3) | 2: /* trace_id */
            p = field_len(c, tp, p, end, &trace_id_len, M_SPAN, 1);
            if (p == NULL)
                goto fail;
            trace_id = p;
            p += trace_id_len;
            break;
        case (2 << 3) | 2: /* span_id */
            p = field_len(c, tp, p, end, &span_id_len, M_SPAN, 2);
            if (p == NULL)
                goto fail;
            span_id = p;
            p += span_id_len;
            break;
        case (3 << 3) | 2: /* trace_state */
            p = field_len(c, tp, p, end, &trace_state_len, M_SPAN, 3);
            if (p == NULL)
                goto fail;
            trace_state = p;
            p += trace_state_len;
            break;
        case (6 << 3) | 0: /* kind */
            p = field_varint(c, tp, p, end, &kind, M_SPAN, 6);
            if (p == NULL)
                goto fail;
            break;
        case (7 << 3) | 1: /* start_time_unix_nano */
            p = field_fixed64(c, tp, p, end, &start, M_SPAN, 7);
            if (p == NULL)
                goto fail;
            break;
        case (8 << 3) | 1: /* end_time_unix_nano */
            p = field_fixed64(c, tp, p, end, &stop, M_SPAN, 8);
            if (p == NULL)
                goto fail;
            break;
        case (15 << 3) | 2: /* status */
            p = field_len(c, tp, p, end, &n, M_SPAN, 15);
            if (p == NULL)
                goto fail;
            if (parse_status(c, p, p + n, &code) < 0)
                goto fail;
            p += n;
            break;
        case (11 << 3) | 2: /* events: past the limit, or unwanted, skipped by length */
            p = field_len(c, tp, p, end, &n, M_SPAN, 11);
            if (p == NULL)
                goto fail;
            if (call->self->has_events &&
                (events == NULL || PyList_GET_SIZE(events) < call->self->event_limit) &&
                parse_event(call, p, p + n, &events) < 0)
                goto fail;
            p += n;
            break;
        default:
            p = skip_field(c, tp, p, end, tag, M_SPAN);
            if (p == NULL)
                goto fail;
        }
    }

    items[0] = Py_NewRef(resource_index);
    if ((items[1] = PyLong_FromLong(as_int32(kind))) == NULL)
        goto fail;
    if ((items[2] = PyLong_FromUnsignedLongLong(start)) == NULL)
        goto fail;
    if ((items[3] = PyLong_FromUnsignedLongLong(stop)) == NULL)
        goto fail;
    if ((items[4] = bytes_or_empty(trace_id, trace_id_len)) == NULL)
        goto fail;
    if ((items[5] = bytes_or_empty(span_id, span_id_len)) == NULL)
        goto fail;
    o = trace_state_len ? make_str(c, trace_state, trace_state_len, M_SPAN, 3)
                        : PyUnicode_New(0, 0);
    if ((items[6] = o) == NULL)
        goto fail;
    if ((items[7] = PyLong_FromLong(as_int32(code))) == NULL)
        goto fail;
    kt_finish(kt, vals, items + SPAN_FIXED);
    if (call->self->has_events) {
        o = events == NULL ? PyTuple_New(0) : PyList_AsTuple(events);
        if ((items[SPAN_FIXED + kt->n] = o) == NULL)
            goto fail;
        Py_CLEAR(events);
    }
    rc = PyList_Append(spans, t);
    Py_DECREF(t);
    return rc;

fail:
    Py_XDECREF(events);
    Py_DECREF(t); /* tuple dealloc tolerates the NULL items */
    return -1;
}

static int
parse_scope_spans(const Call *call, const uint8_t *p, const uint8_t *end,
                  PyObject *resource_index, PyObject *spans)
{
    const Ctx *c = &call->c;

    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_SCOPE_SPANS);
        if (p == NULL)
            return -1;
        if (tag == ((2 << 3) | 2)) { /* spans */
            p = field_len(c, tp, p, end, &n, M_SCOPE_SPANS, 2);
            if (p == NULL)
                return -1;
            if (parse_span(call, p, p + n, resource_index, spans) < 0)
                return -1;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_SCOPE_SPANS);
            if (p == NULL)
                return -1;
        }
    }
    return 0;
}

static int
parse_resource_spans(const Call *call, const uint8_t *p, const uint8_t *end,
                     PyObject *resources, PyObject *spans)
{
    const Ctx *c = &call->c;
    const KeyTable *kt = &call->self->res_kt;
    KeyVals vals = call->res_vals;
    PyObject *rt, *ri;
    PyObject **items;
    int rc;

    /* Empty ResourceSpans cost a tuple each too (2 bytes of wire data for
       ~56 bytes of memory): the span bound bounds them as well. */
    if (call->self->max_spans > 0 && PyList_GET_SIZE(resources) >= call->self->max_spans) {
        raise_too_many("resource_spans", call->self->max_spans);
        return -1;
    }
    ri = PyLong_FromSsize_t(PyList_GET_SIZE(resources));
    if (ri == NULL)
        return -1;
    rt = PyTuple_New(kt->n);
    if (rt == NULL) {
        Py_DECREF(ri);
        return -1;
    }
    kt_begin(kt, vals);
    items = ((PyTupleObject *)rt)->ob_item;
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(c, p, end, &tag, M_RESOURCE_SPANS);
        if (p == NULL)
            goto fail;
        if (tag == ((2 << 3) | 2)) { /* scope_spans */
            p = field_len(c, tp, p, end, &n, M_RESOURCE_SPANS, 2);
            if (p == NULL)
                goto fail;
            if (parse_scope_spans(call, p, p + n, ri, spans) < 0)
                goto fail;
            p += n;
        }
        else if (tag == ((1 << 3) | 2)) { /* resource */
            p = field_len(c, tp, p, end, &n, M_RESOURCE_SPANS, 1);
            if (p == NULL)
                goto fail;
            if (parse_resource(c, kt, vals, items, p, p + n) < 0)
                goto fail;
            p += n;
        }
        else {
            p = skip_field(c, tp, p, end, tag, M_RESOURCE_SPANS);
            if (p == NULL)
                goto fail;
        }
    }
    kt_finish(kt, vals, items);
    rc = PyList_Append(resources, rt);
    Py_DECREF(rt);
    Py_DECREF(ri);
    return rc;

fail:
    Py_DECREF(rt);
    Py_DECREF(ri);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Scanner type                                                        */

static PyObject *
Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"span_keys",   "resource_keys", "max_spans",
                             "max_array_items", "array_keys", "event_names",
                             "event_keys",  "max_events",    NULL};
    PyObject *span_keys, *resource_keys, *array_keys = NULL;
    PyObject *event_names = NULL, *event_keys = NULL;
    Py_ssize_t max_spans = 0, max_array_items = 64, max_events = 16;
    ScannerObject *self;
    Py_ssize_t i;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|nnO$OOn:Scanner", kwlist, &span_keys,
                                     &resource_keys, &max_spans, &max_array_items,
                                     &array_keys, &event_names, &event_keys, &max_events))
        return NULL;
    if (max_events < 0) {
        PyErr_Format(PyExc_ValueError, "max_events must be 0 or more, not %zd", max_events);
        return NULL;
    }
    if (max_spans < 0) {
        PyErr_Format(PyExc_ValueError, "max_spans must be 0 (unlimited) or more, not %zd",
                     max_spans);
        return NULL;
    }
    if (max_array_items < 0) {
        PyErr_Format(PyExc_ValueError,
                     "max_array_items must be 0 (no array items) or more, not %zd",
                     max_array_items);
        return NULL;
    }
    self = (ScannerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->max_spans = max_spans;
    self->max_array_items = max_array_items;
    if (kt_init(&self->span_kt, span_keys, "span_keys") < 0 ||
        kt_init(&self->res_kt, resource_keys, "resource_keys") < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (array_keys == NULL)
        self->array_keys = PyTuple_New(0);
    else
        self->array_keys = kt_mark_arrays(&self->span_kt, array_keys, "array_keys", "span_keys");
    if (self->array_keys == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->max_events = max_events;
    self->event_limit = max_events == PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : max_events + 1;
    {
        PyObject *none = PyTuple_New(0);
        int bad = none == NULL ||
                  kt_init(&self->name_kt, event_names == NULL ? none : event_names,
                          "event_names") < 0 ||
                  kt_init(&self->event_kt, event_keys == NULL ? none : event_keys,
                          "event_keys") < 0;
        Py_XDECREF(none);
        if (bad) {
            Py_DECREF(self);
            return NULL;
        }
    }
    for (i = 0; i < self->name_kt.n; i++) {
        PyObject *e = PyTuple_GET_ITEM(self->name_kt.keys, i);
        if (!PyUnicode_Check(e)) {
            PyErr_Format(PyExc_TypeError, "event_names must contain str, not %.100s",
                         Py_TYPE(e)->tp_name);
            Py_DECREF(self);
            return NULL;
        }
    }
    self->has_events = self->name_kt.n > 0;
    return (PyObject *)self;
}

static void
Scanner_dealloc(ScannerObject *self)
{
    kt_clear(&self->span_kt);
    kt_clear(&self->res_kt);
    kt_clear(&self->name_kt);
    kt_clear(&self->event_kt);
    Py_CLEAR(self->array_keys);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Scanner_scan_doc,
"scan(data) -> (resources, spans)\n\n"
"Scan a serialized ExportTraceServiceRequest (any bytes-like object).\n"
"Raises ScanError for malformed wire data, TooManySpans (a ScanError)\n"
"before building a span beyond max_spans.");

/* Values slots on the stack for up to this many grouped keys (the
   processor's default groups need 22); more are allocated per call. */
#define STACK_VALS 64

static PyObject *
Scanner_scan(ScannerObject *self, PyObject *data)
{
    Py_buffer view;
    PyObject *resources = NULL, *spans = NULL, *result = NULL;
    PyObject *stack_vals[STACK_VALS];
    PyObject **vals = stack_vals;
    Py_ssize_t nspan = self->span_kt.grouped ? self->span_kt.nents : 0;
    Py_ssize_t nres = self->res_kt.grouped ? self->res_kt.nents : 0;
    Py_ssize_t nvals = nspan + nres + (self->event_kt.grouped ? self->event_kt.nents : 0);
    const uint8_t *p, *end;
    Call call;
    Py_ssize_t i;

    if (nvals > STACK_VALS) {
        vals = PyMem_Calloc((size_t)nvals, sizeof(*vals));
        if (vals == NULL)
            return PyErr_NoMemory();
    }
    else
        memset(stack_vals, 0, sizeof(*vals) * (size_t)nvals);
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        if (vals != stack_vals)
            PyMem_Free(vals);
        return NULL;
    }
    call.self = self;
    call.span_vals = self->span_kt.grouped ? vals : NULL;
    call.res_vals = self->res_kt.grouped ? vals + nspan : NULL;
    call.event_vals = self->event_kt.grouped ? vals + nspan + nres : NULL;
    resources = PyList_New(0);
    spans = PyList_New(0);
    if (resources == NULL || spans == NULL)
        goto done;
    call.c.base = (const uint8_t *)view.buf;
    /* one element more than max_array_items tells the caller the array was cut */
    call.c.array_limit = self->max_array_items == 0              ? 0
                         : self->max_array_items == PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX
                                                                  : self->max_array_items + 1;
    p = call.c.base;
    end = view.len > 0 ? p + view.len : p;
    while (p < end) {
        const uint8_t *tp = p;
        uint32_t tag;
        size_t n;

        p = read_tag(&call.c, p, end, &tag, M_REQUEST);
        if (p == NULL)
            goto done;
        if (tag == ((1 << 3) | 2)) { /* resource_spans */
            p = field_len(&call.c, tp, p, end, &n, M_REQUEST, 1);
            if (p == NULL)
                goto done;
            if (parse_resource_spans(&call, p, p + n, resources, spans) < 0)
                goto done;
            p += n;
        }
        else {
            p = skip_field(&call.c, tp, p, end, tag, M_REQUEST);
            if (p == NULL)
                goto done;
        }
    }
    result = PyTuple_Pack(2, resources, spans);

done:
    /* an error mid-message leaves that message's values behind */
    for (i = 0; i < nvals; i++)
        Py_CLEAR(vals[i]);
    if (vals != stack_vals)
        PyMem_Free(vals);
    Py_XDECREF(resources);
    Py_XDECREF(spans);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
Scanner_get_span_keys(ScannerObject *self, void *closure)
{
    return Py_NewRef(self->span_kt.keys);
}

static PyObject *
Scanner_get_resource_keys(ScannerObject *self, void *closure)
{
    return Py_NewRef(self->res_kt.keys);
}

static PyObject *
Scanner_get_max_spans(ScannerObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->max_spans);
}

static PyObject *
Scanner_get_max_array_items(ScannerObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->max_array_items);
}

static PyObject *
Scanner_get_array_keys(ScannerObject *self, void *closure)
{
    return Py_NewRef(self->array_keys);
}

static PyObject *
Scanner_get_event_names(ScannerObject *self, void *closure)
{
    return Py_NewRef(self->name_kt.keys);
}

static PyObject *
Scanner_get_event_keys(ScannerObject *self, void *closure)
{
    return Py_NewRef(self->event_kt.keys);
}

static PyObject *
Scanner_get_max_events(ScannerObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->max_events);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_O, Scanner_scan_doc},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Scanner_getset[] = {
    {"span_keys", (getter)Scanner_get_span_keys, NULL, "Wanted span attribute keys.", NULL},
    {"resource_keys", (getter)Scanner_get_resource_keys, NULL,
     "Wanted resource attribute keys.", NULL},
    {"max_spans", (getter)Scanner_get_max_spans, NULL,
     "Most spans one scan() returns (0: unlimited).", NULL},
    {"max_array_items", (getter)Scanner_get_max_array_items, NULL,
     "Array values hold at most this many elements plus one (0: none).", NULL},
    {"array_keys", (getter)Scanner_get_array_keys, NULL,
     "Span keys whose array values are returned (others' arrays are None).", NULL},
    {"event_names", (getter)Scanner_get_event_names, NULL,
     "Names of the span events returned (none: no events element).", NULL},
    {"event_keys", (getter)Scanner_get_event_keys, NULL,
     "Attribute keys read from each returned span event.", NULL},
    {"max_events", (getter)Scanner_get_max_events, NULL,
     "A span's events element holds at most this many events plus one.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyDoc_STRVAR(Scanner_doc,
"Scanner(span_keys, resource_keys, max_spans=0, max_array_items=64, array_keys=(),\n"
"        *, event_names=(), event_keys=(), max_events=16)\n\n"
"C scanner for OTLP ExportTraceServiceRequest payloads; see\n"
"apiusage.processor.receivers.scan for the output format.");

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "apiusage.processor.receivers._cscan.Scanner",
    .tp_basicsize = sizeof(ScannerObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Scanner_doc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
    .tp_new = Scanner_new,
};

/* ------------------------------------------------------------------ */
/* Module                                                              */

static int
check_error_class(PyObject *cls, PyObject *base)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)base)) {
        PyErr_Format(PyExc_TypeError, "error class must be a subclass of %R", base);
        return -1;
    }
    return 0;
}

static PyObject *
set_error_class(PyObject *module, PyObject *args)
{
    PyObject *cls, *too_many = NULL;

    if (!PyArg_ParseTuple(args, "O|O:_set_error_class", &cls, &too_many))
        return NULL;
    if (check_error_class(cls, PyExc_Exception) < 0 ||
        (too_many != NULL && check_error_class(too_many, cls) < 0))
        return NULL;
    Py_XSETREF(scan_error_class, Py_NewRef(cls));
    /* without a second class, too many spans raise the error class itself */
    Py_XSETREF(too_many_spans_class, Py_XNewRef(too_many));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_error_class", (PyCFunction)set_error_class, METH_VARARGS,
     "_set_error_class(error_class, too_many_spans_class=None)\n\n"
     "Set the exception classes raised for malformed payloads and for more\n"
     "spans than max_spans (a subclass of the first; the first if omitted)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cscan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "apiusage.processor.receivers._cscan",
    .m_doc = "C scanner for OTLP ExportTraceServiceRequest payloads.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cscan(void)
{
    PyObject *m;

    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    m = PyModule_Create(&cscan_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
