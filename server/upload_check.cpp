/*  upload_check.cpp — the allow-list walk over serialized bytes and the
    semantic check of the object read back (see upload_check.h).

    The walk mirrors faiss/impl/index_read.cpp of FAISS 1.7.3 for the
    structures below, and only those; it must stay in step with it (the
    field order and widths are FAISS's, not ours). It never allocates from
    a declared size without first checking the bytes left.

    Allowed structures (fourcc: class):
      IxF2 IxFI IxFl        IndexFlatL2 / IndexFlatIP / IndexFlat
      IxPq                  IndexPQ
      IxSQ                  IndexScalarQuantizer
      IxHe                  IndexLSH (with its 'rrot' rotation)
      IwFl IwPQ IwSq        IndexIVFFlat / IndexIVFPQ / IndexIVFScalarQuantizer,
                            inverted lists 'ilar' (ArrayInvertedLists) only
      IHNf IHNs IHNp        IndexHNSWFlat / IndexHNSWSQ / IndexHNSWPQ
      IxMp IxM2             IndexIDMap / IndexIDMap2
      IxPT                  IndexPreTransform, transforms Pcam (PCAMatrix),
                            LTra (LinearTransform, OPQ), rrot, VNrm, VCnt
      IxRF                  IndexRefineFlat (refinement index: a Flat)
    Metric: L2 or inner product; FAISS's extra metrics (L1, Linf, Lp,
    Canberra, BrayCurtis, JensenShannon, with a finite metric_arg) only
    where fpx_upload_check_metrics accepts them. Everything else is
    refused by name.

    It must not: call FAISS's readers, trust a count before comparing it
    with the bytes left, or accept a structure it does not walk in full.
*/
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <typeinfo>
#include <vector>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexLSH.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/VectorTransform.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>

#include "upload_check.h"
#include "fpx_errors.h"
#include "fpx_protocol.h"

namespace {

const int64_t S_NTOTAL_MAX = (int64_t) 1 << 40;   //  FAISS's own vector bound
const uint64_t S_COUNT_MAX = (uint64_t) 1 << 20;  //  nlist, nprobe, efSearch… (as set_attr)
const int S_DEPTH_MAX = 8;                        //  nested indexes
const int S_CHAIN_MAX = 16;                       //  transforms in a PreTransform
const int S_HNSW_LEVELS_MAX = 64;

struct Reject {
    std::string message;
};

[[noreturn]] void
reject (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

void
reject (const char *format, ...)
{
    char text [512];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    throw Reject { std::string ("uploaded index: ") + text };
}

constexpr uint32_t
fourcc (const char (&s) [5])
{
    return (uint32_t) (uint8_t) s [0] | (uint32_t) (uint8_t) s [1] << 8
         | (uint32_t) (uint8_t) s [2] << 16 | (uint32_t) (uint8_t) s [3] << 24;
}

//  The four characters when printable, else the hex value.
std::string
fourcc_text (uint32_t h)
{
    char text [16];
    bool printable = true;
    for (int i = 0; i < 4; i++) {
        unsigned c = (h >> (8 * i)) & 0xff;
        if (c < 0x20 || c > 0x7e || c == '\'' || c == '\\')
            printable = false;
    }
    if (printable)
        snprintf (text, sizeof text, "'%c%c%c%c'", (char) (h & 0xff), (char) ((h >> 8) & 0xff),
                  (char) ((h >> 16) & 0xff), (char) (h >> 24));
    else
        snprintf (text, sizeof text, "0x%08x", h);
    return text;
}

[[noreturn]] void
not_accepted (uint32_t h)
{
    reject ("structure %s is not accepted", fourcc_text (h).c_str ());
}

// ---- the byte walk -------------------------------------------------------

struct Walker {
    const uint8_t *start, *p, *end;

    size_t left () const { return (size_t) (end - p); }

    const uint8_t *take (size_t n, const char *what)
    {
        if (n > left ())
            reject ("truncated: %s needs %zu bytes at offset %zu, %zu left", what, n,
                    (size_t) (p - start), left ());
        const uint8_t *at = p;
        p += n;
        return at;
    }
    template <typename T> T get (const char *what)
    {
        T value;
        memcpy (&value, take (sizeof value, what), sizeof value);
        return value;
    }
    bool get_bool (const char *what)
    {
        uint8_t value = get<uint8_t> (what);
        if (value > 1)
            reject ("%s is %u, not a boolean", what, value);
        return value;
    }
    //  A std::vector's count, bounded by the bytes left.
    uint64_t count (size_t elem_size, const char *what)
    {
        uint64_t n = get<uint64_t> (what);
        if (n > left () / elem_size)
            reject ("truncated: %s declares %llu elements, more than the %zu bytes left hold", what,
                    (unsigned long long) n, left ());
        return n;
    }
    //  A vector of exactly `expected` elements (returns its bytes).
    const uint8_t *vector_of (size_t elem_size, uint64_t expected, const char *what)
    {
        uint64_t n = count (elem_size, what);
        if (n != expected)
            reject ("%s has %llu elements, expected %llu", what, (unsigned long long) n,
                    (unsigned long long) expected);
        return take (n * elem_size, what);
    }
    //  A vector of any (bounded) size; its count in *n.
    const uint8_t *vector_any (size_t elem_size, uint64_t *n, const char *what)
    {
        *n = count (elem_size, what);
        return take (*n * elem_size, what);
    }
};

//  What a walked index tells its parent.
struct Node {
    uint32_t h = 0;
    int d = 0;
    int64_t ntotal = 0;
    bool trained = false;
    int metric = 0;
};

enum class Role { any, quantizer, flat, sq, pq };

Node walk_index (Walker &w, Role role, int depth);

Node
walk_header (Walker &w, uint32_t h)
{
    Node n;
    n.h = h;
    n.d = w.get<int32_t> ("d");
    if (n.d < 1 || n.d > FPX_DIM_MAX)
        reject ("%s: dimension %d out of [1, %d]", fourcc_text (h).c_str (), n.d, FPX_DIM_MAX);
    n.ntotal = w.get<int64_t> ("ntotal");
    if (n.ntotal < 0 || n.ntotal > S_NTOTAL_MAX)
        reject ("%s: ntotal %lld out of range", fourcc_text (h).c_str (), (long long) n.ntotal);
    w.get<int64_t> ("header");
    w.get<int64_t> ("header");
    n.trained = w.get_bool ("is_trained");
    n.metric = w.get<int32_t> ("metric_type");
    if (!fpx_metric_is_valid (n.metric))
        reject ("metric type %d is not known", n.metric);
    if (n.metric > faiss::METRIC_L2) {      //  write_index_header writes it for these only
        float metric_arg = w.get<float> ("metric_arg");
        if (!std::isfinite (metric_arg))
            reject ("metric_arg is not finite");
    }
    return n;
}

void
walk_flat_codes (Walker &w, const Node &n, size_t code_size, const char *what)
{
    w.vector_of (1, (uint64_t) n.ntotal * code_size, what);
}

void
walk_flat (Walker &w, Node &n)
{
    if (n.h == fourcc ("IxF2") && n.metric != faiss::METRIC_L2)
        reject ("IndexFlatL2 with metric %d", n.metric);
    if (n.h == fourcc ("IxFI") && n.metric != faiss::METRIC_INNER_PRODUCT)
        reject ("IndexFlatIP with metric %d", n.metric);
    //  READXBVECTOR: the count is in floats.
    w.vector_of (4, (uint64_t) n.ntotal * n.d, "flat vectors");
}

struct PQShape {
    uint64_t M, nbits, code_size;
};

PQShape
walk_pq (Walker &w, int d)
{
    uint64_t pq_d = w.get<uint64_t> ("pq.d");
    uint64_t M = w.get<uint64_t> ("pq.M");
    uint64_t nbits = w.get<uint64_t> ("pq.nbits");
    if (pq_d != (uint64_t) d)
        reject ("PQ dimension %llu differs from the index's %d", (unsigned long long) pq_d, d);
    if (M < 1 || M > pq_d || pq_d % M)
        reject ("PQ M = %llu does not divide d = %llu", (unsigned long long) M,
                (unsigned long long) pq_d);
    if (nbits < 1 || nbits > 16)
        reject ("PQ nbits = %llu out of [1, 16]", (unsigned long long) nbits);
    w.vector_of (4, pq_d << nbits, "PQ centroids");
    return PQShape { M, nbits, (nbits * M + 7) / 8 };
}

//  Code size of a ScalarQuantizer of type qtype and dimension d, as
//  ScalarQuantizer::set_derived_sizes; 0 for an unknown type.
uint64_t
sq_code_size (int qtype, uint64_t d)
{
    switch (qtype) {
        case faiss::ScalarQuantizer::QT_8bit:
        case faiss::ScalarQuantizer::QT_8bit_uniform:
        case faiss::ScalarQuantizer::QT_8bit_direct: return d;
        case faiss::ScalarQuantizer::QT_4bit:
        case faiss::ScalarQuantizer::QT_4bit_uniform: return (d + 1) / 2;
        case faiss::ScalarQuantizer::QT_6bit: return (d * 6 + 7) / 8;
        case faiss::ScalarQuantizer::QT_fp16: return d * 2;
    }
    return 0;
}

//  Trained floats a ScalarQuantizer of type qtype needs.
uint64_t
sq_trained_size (int qtype, uint64_t d)
{
    switch (qtype) {
        case faiss::ScalarQuantizer::QT_8bit:
        case faiss::ScalarQuantizer::QT_4bit:
        case faiss::ScalarQuantizer::QT_6bit: return 2 * d;
        case faiss::ScalarQuantizer::QT_8bit_uniform:
        case faiss::ScalarQuantizer::QT_4bit_uniform: return 2;
    }
    return 0;
}

uint64_t
walk_sq (Walker &w, int d, bool trained)
{
    int qtype = w.get<int32_t> ("sq.qtype");
    int rangestat = w.get<int32_t> ("sq.rangestat");
    float rangestat_arg = w.get<float> ("sq.rangestat_arg");
    uint64_t sq_d = w.get<uint64_t> ("sq.d");
    w.get<uint64_t> ("sq.code_size");     //  recomputed by FAISS on read
    if (qtype < faiss::ScalarQuantizer::QT_8bit || qtype > faiss::ScalarQuantizer::QT_6bit)
        reject ("scalar quantizer type %d is not known", qtype);
    if (rangestat < faiss::ScalarQuantizer::RS_minmax
    ||  rangestat > faiss::ScalarQuantizer::RS_optim || !std::isfinite (rangestat_arg))
        reject ("scalar quantizer range statistic %d / %g is not valid", rangestat,
                (double) rangestat_arg);
    if (sq_d != (uint64_t) d)
        reject ("scalar quantizer dimension %llu differs from the index's %d",
                (unsigned long long) sq_d, d);
    uint64_t n, expected = sq_trained_size (qtype, sq_d);
    w.vector_any (4, &n, "scalar quantizer trained values");
    if (n != expected && (trained || n != 0))
        reject ("scalar quantizer has %llu trained values, expected %llu",
                (unsigned long long) n, (unsigned long long) expected);
    return sq_code_size (qtype, sq_d);
}

void
walk_linear (Walker &w)
{
    w.get_bool ("have_bias");
    uint64_t n;
    w.vector_any (4, &n, "transform matrix");
    w.vector_any (4, &n, "transform bias");
}

//  One VectorTransform; its (d_in, d_out) in *d_in, *d_out. rotation_only:
//  IndexLSH's, which FAISS requires to be a random rotation.
void
walk_transform (Walker &w, int *d_in, int *d_out, bool rotation_only = false)
{
    uint32_t h = w.get<uint32_t> ("transform fourcc");
    uint64_t n;
    if (rotation_only && h != fourcc ("rrot"))
        reject ("LSH rotation must be a random rotation, not %s", fourcc_text (h).c_str ());
    if (h == fourcc ("Pcam")) {
        float eigen_power = w.get<float> ("eigen_power");
        float epsilon = w.get<float> ("epsilon");
        if (!std::isfinite (eigen_power) || !std::isfinite (epsilon))
            reject ("PCA eigen_power / epsilon not finite");
        w.get_bool ("random_rotation");
        w.get<int32_t> ("balanced_bins");
        w.vector_any (4, &n, "PCA mean");
        w.vector_any (4, &n, "PCA eigenvalues");
        w.vector_any (4, &n, "PCA matrix");
        walk_linear (w);
    }
    else if (h == fourcc ("LTra") || h == fourcc ("rrot"))
        walk_linear (w);
    else if (h == fourcc ("VNrm")) {
        float norm = w.get<float> ("norm");
        if (!std::isfinite (norm))
            reject ("normalization norm not finite");
    }
    else if (h == fourcc ("VCnt"))
        w.vector_any (4, &n, "centering mean");
    else
        not_accepted (h);
    *d_in = w.get<int32_t> ("d_in");
    *d_out = w.get<int32_t> ("d_out");
    w.get_bool ("transform is_trained");
    if (*d_in < 1 || *d_in > FPX_DIM_MAX || *d_out < 1 || *d_out > FPX_DIM_MAX)
        reject ("transform dimensions %d -> %d out of [1, %d]", *d_in, *d_out, FPX_DIM_MAX);
}

//  Inverted lists of an IVF index: 'ilar' only.
void
walk_invlists (Walker &w, const Node &ivf, uint64_t nlist, uint64_t code_size)
{
    uint32_t h = w.get<uint32_t> ("inverted lists fourcc");
    if (h != fourcc ("ilar"))
        not_accepted (h);
    uint64_t il_nlist = w.get<uint64_t> ("invlists.nlist");
    uint64_t il_code_size = w.get<uint64_t> ("invlists.code_size");
    if (il_nlist != nlist || il_code_size != code_size)
        reject ("inverted lists of %llu lists × %llu bytes, the index has %llu × %llu",
                (unsigned long long) il_nlist, (unsigned long long) il_code_size,
                (unsigned long long) nlist, (unsigned long long) code_size);
    std::vector<uint64_t> sizes (nlist, 0);
    uint32_t list_type = w.get<uint32_t> ("list type");
    uint64_t n;
    if (list_type == fourcc ("full")) {
        const uint8_t *at = w.vector_of (8, nlist, "list sizes");
        memcpy (sizes.data (), at, nlist * 8);
    }
    else if (list_type == fourcc ("sprs")) {
        const uint8_t *at = w.vector_any (8, &n, "sparse list sizes");
        if (n % 2)
            reject ("sparse list sizes have an odd count");
        for (uint64_t j = 0; j < n; j += 2) {
            uint64_t pair [2];
            memcpy (pair, at + j * 8, 16);
            if (pair [0] >= nlist)
                reject ("sparse list number %llu out of [0, %llu)", (unsigned long long) pair [0],
                        (unsigned long long) nlist);
            sizes [pair [0]] = pair [1];
        }
    }
    else
        reject ("list type %s is not accepted", fourcc_text (list_type).c_str ());
    //  Each entry: code_size bytes of code and an 8-byte id.
    uint64_t total = 0, entry = code_size + 8;
    for (uint64_t i = 0; i < nlist; i++) {
        if (sizes [i] > w.left () / entry)
            reject ("list %llu declares %llu entries, more than the bytes left hold",
                    (unsigned long long) i, (unsigned long long) sizes [i]);
        w.take (sizes [i] * entry, "list entries");
        total += sizes [i];
    }
    if (total != (uint64_t) ivf.ntotal)
        reject ("inverted lists hold %llu entries, the index says ntotal = %lld",
                (unsigned long long) total, (long long) ivf.ntotal);
}

//  IndexIVF's header: returns nlist.
uint64_t
walk_ivf_header (Walker &w, const Node &n, int depth)
{
    uint64_t nlist = w.get<uint64_t> ("nlist");
    uint64_t nprobe = w.get<uint64_t> ("nprobe");
    if (nlist < 1 || nlist > S_COUNT_MAX)
        reject ("nlist %llu out of [1, %llu]", (unsigned long long) nlist,
                (unsigned long long) S_COUNT_MAX);
    if (nprobe < 1 || nprobe > S_COUNT_MAX)
        reject ("nprobe %llu out of [1, %llu]", (unsigned long long) nprobe,
                (unsigned long long) S_COUNT_MAX);
    Node q = walk_index (w, Role::quantizer, depth + 1);
    if (q.d != n.d)
        reject ("quantizer dimension %d differs from the index's %d", q.d, n.d);
    if ((uint64_t) q.ntotal != nlist && (n.trained || q.ntotal != 0))
        reject ("quantizer holds %lld centroids for %llu lists", (long long) q.ntotal,
                (unsigned long long) nlist);
    //  Direct map: type (char), array, and for a hash table its pairs.
    uint8_t type = w.get<uint8_t> ("direct map type");
    if (type > faiss::DirectMap::Hashtable)
        reject ("direct map type %u is not known", type);
    uint64_t count;
    w.vector_any (8, &count, "direct map array");
    if (type == faiss::DirectMap::Hashtable)
        w.vector_any (16, &count, "direct map hash table");
    return nlist;
}

void
walk_ivf (Walker &w, Node &n, int depth)
{
    uint64_t nlist = walk_ivf_header (w, n, depth);
    uint64_t code_size;
    if (n.h == fourcc ("IwFl"))
        code_size = (uint64_t) n.d * 4;
    else if (n.h == fourcc ("IwPQ")) {
        w.get_bool ("by_residual");
        code_size = w.get<uint64_t> ("code_size");
        PQShape pq = walk_pq (w, n.d);
        if (code_size != pq.code_size)
            reject ("IVFPQ code size %llu, its PQ's is %llu", (unsigned long long) code_size,
                    (unsigned long long) pq.code_size);
    }
    else {      //  IwSq
        uint64_t sq_size = walk_sq (w, n.d, n.trained);
        code_size = w.get<uint64_t> ("code_size");
        w.get_bool ("by_residual");
        if (code_size != sq_size)
            reject ("IVFScalarQuantizer code size %llu, its quantizer's is %llu",
                    (unsigned long long) code_size, (unsigned long long) sq_size);
    }
    walk_invlists (w, n, nlist, code_size);
}

void
walk_hnsw (Walker &w, Node &n, int depth)
{
    uint64_t nprobas, ncum, count;
    w.vector_any (8, &nprobas, "HNSW assign_probas");
    w.vector_any (4, &ncum, "HNSW cum_nneighbor_per_level");
    if (nprobas < 1 || nprobas > S_HNSW_LEVELS_MAX || ncum != nprobas + 1)
        reject ("HNSW has %llu level probabilities and %llu level sizes",
                (unsigned long long) nprobas, (unsigned long long) ncum);
    w.vector_of (4, (uint64_t) n.ntotal, "HNSW levels");
    const uint8_t *offsets = w.vector_of (8, (uint64_t) n.ntotal + 1, "HNSW offsets");
    uint64_t last;
    memcpy (&last, offsets + (uint64_t) n.ntotal * 8, 8);
    w.vector_any (4, &count, "HNSW neighbors");
    if (count != last)
        reject ("HNSW has %llu neighbor slots, its offsets end at %llu",
                (unsigned long long) count, (unsigned long long) last);
    w.get<int32_t> ("entry_point");
    w.get<int32_t> ("max_level");
    w.get<int32_t> ("efConstruction");
    w.get<int32_t> ("efSearch");
    w.get<int32_t> ("upper_beam");
    Role role = n.h == fourcc ("IHNf") ? Role::flat : n.h == fourcc ("IHNs") ? Role::sq : Role::pq;
    Node storage = walk_index (w, role, depth + 1);
    if (storage.d != n.d || storage.ntotal != n.ntotal)
        reject ("HNSW storage holds %lld vectors of %d dimensions, the graph %lld of %d",
                (long long) storage.ntotal, storage.d, (long long) n.ntotal, n.d);
}

bool
role_allows (Role role, uint32_t h)
{
    bool flat = h == fourcc ("IxF2") || h == fourcc ("IxFI") || h == fourcc ("IxFl");
    switch (role) {
        case Role::any: return true;
        case Role::flat: return flat;
        case Role::sq: return h == fourcc ("IxSQ");
        case Role::pq: return h == fourcc ("IxPq");
        case Role::quantizer:
            return flat || h == fourcc ("IHNf") || h == fourcc ("IHNs") || h == fourcc ("IHNp");
    }
    return false;
}

Node
walk_index (Walker &w, Role role, int depth)
{
    if (depth > S_DEPTH_MAX)
        reject ("indexes nested more than %d deep", S_DEPTH_MAX);
    uint32_t h = w.get<uint32_t> ("index fourcc");
    bool known = h == fourcc ("IxF2") || h == fourcc ("IxFI") || h == fourcc ("IxFl")
              || h == fourcc ("IxPq") || h == fourcc ("IxSQ") || h == fourcc ("IxHe")
              || h == fourcc ("IwFl") || h == fourcc ("IwPQ") || h == fourcc ("IwSq")
              || h == fourcc ("IHNf") || h == fourcc ("IHNs") || h == fourcc ("IHNp")
              || h == fourcc ("IxMp") || h == fourcc ("IxM2") || h == fourcc ("IxPT")
              || h == fourcc ("IxRF");
    if (!known)
        not_accepted (h);
    if (!role_allows (role, h))
        reject ("structure %s is not accepted in this position", fourcc_text (h).c_str ());
    Node n = walk_header (w, h);
    if (h == fourcc ("IxF2") || h == fourcc ("IxFI") || h == fourcc ("IxFl"))
        walk_flat (w, n);
    else if (h == fourcc ("IxPq")) {
        PQShape pq = walk_pq (w, n.d);
        walk_flat_codes (w, n, pq.code_size, "PQ codes");
        int search_type = w.get<int32_t> ("search_type");
        if (search_type < faiss::IndexPQ::ST_PQ || search_type > faiss::IndexPQ::ST_polysemous_generalize)
            reject ("PQ search type %d is not known", search_type);
        w.get_bool ("encode_signs");
        w.get<int32_t> ("polysemous_ht");
    }
    else if (h == fourcc ("IxSQ")) {
        uint64_t code_size = walk_sq (w, n.d, n.trained);
        walk_flat_codes (w, n, code_size, "scalar quantizer codes");
    }
    else if (h == fourcc ("IxHe")) {
        int nbits = w.get<int32_t> ("LSH nbits");
        if (nbits < 1 || nbits > FPX_DIM_MAX)
            reject ("LSH nbits %d out of [1, %d]", nbits, FPX_DIM_MAX);
        w.get_bool ("rotate_data");
        w.get_bool ("train_thresholds");
        uint64_t count;
        w.vector_any (4, &count, "LSH thresholds");
        int code_size = w.get<int32_t> ("LSH code size");
        if (code_size != (nbits + 7) / 8)
            reject ("LSH code size %d for %d bits", code_size, nbits);
        int d_in, d_out;
        walk_transform (w, &d_in, &d_out, true);
        if (d_in != n.d || d_out != nbits)
            reject ("LSH rotation %d -> %d for d = %d, nbits = %d", d_in, d_out, n.d, nbits);
        walk_flat_codes (w, n, (uint64_t) code_size, "LSH codes");
    }
    else if (h == fourcc ("IwFl") || h == fourcc ("IwPQ") || h == fourcc ("IwSq"))
        walk_ivf (w, n, depth);
    else if (h == fourcc ("IHNf") || h == fourcc ("IHNs") || h == fourcc ("IHNp"))
        walk_hnsw (w, n, depth);
    else if (h == fourcc ("IxMp") || h == fourcc ("IxM2")) {
        Node sub = walk_index (w, Role::any, depth + 1);
        if (sub.d != n.d || sub.ntotal != n.ntotal)
            reject ("IDMap over an index of %lld vectors of %d dimensions, it says %lld of %d",
                    (long long) sub.ntotal, sub.d, (long long) n.ntotal, n.d);
        w.vector_of (8, (uint64_t) n.ntotal, "IDMap ids");
    }
    else if (h == fourcc ("IxPT")) {
        int nt = w.get<int32_t> ("chain length");
        if (nt < 0 || nt > S_CHAIN_MAX)
            reject ("PreTransform chain of %d transforms", nt);
        int d = n.d;
        for (int i = 0; i < nt; i++) {
            int d_in, d_out;
            walk_transform (w, &d_in, &d_out);
            if (d_in != d)
                reject ("transform %d takes %d dimensions, it is given %d", i, d_in, d);
            d = d_out;
        }
        Node sub = walk_index (w, Role::any, depth + 1);
        if (sub.d != d || sub.ntotal != n.ntotal)
            reject ("PreTransform over an index of %lld vectors of %d dimensions, expected "
                    "%lld of %d", (long long) sub.ntotal, sub.d, (long long) n.ntotal, d);
    }
    else {      //  IxRF
        Node base = walk_index (w, Role::any, depth + 1);
        Node refine = walk_index (w, Role::flat, depth + 1);
        if (base.d != n.d || refine.d != n.d || base.ntotal != n.ntotal
        ||  refine.ntotal != n.ntotal)
            reject ("RefineFlat over indexes of %lld and %lld vectors (%d, %d dimensions), it "
                    "says %lld of %d", (long long) base.ntotal, (long long) refine.ntotal,
                    base.d, refine.d, (long long) n.ntotal, n.d);
        float k_factor = w.get<float> ("k_factor");
        if (!(k_factor >= 1 && k_factor <= 1e6f))
            reject ("RefineFlat k_factor %g out of [1, 1e6]", (double) k_factor);
    }
    return n;
}

// ---- the object check ----------------------------------------------------

bool
all_finite (const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite (x [i]))
            return false;
    return true;
}

void
need_finite (const float *x, size_t n, const char *what)
{
    if (!all_finite (x, n))
        reject ("%s hold a value that is not finite", what);
}

//  typeid of the object through its own (polymorphic) base: casting it
//  to T first, when it is not a T, is undefined (clang's UBSan vptr check
//  stops the fuzzers on it).
template <typename T, typename Base>
bool
is_exactly (const Base *object)
{
    return object && typeid (*object) == typeid (T);
}

//  What the parent needs of a child's labels.
struct Context {
    bool positional = false;     //  labels must be storage positions [0, ntotal)
};

void check_index (const faiss::Index *index, Context ctx, int depth);

void
check_common (const faiss::Index *index)
{
    if (index->d < 1 || index->d > FPX_DIM_MAX)
        reject ("dimension %d out of [1, %d]", index->d, FPX_DIM_MAX);
    if (index->ntotal < 0 || index->ntotal > S_NTOTAL_MAX)
        reject ("ntotal %lld out of range", (long long) index->ntotal);
    if (!fpx_metric_is_valid (index->metric_type))
        reject ("metric type %d is not known", (int) index->metric_type);
    if (!std::isfinite (index->metric_arg))
        reject ("metric_arg is not finite");
}

bool
metric_is_basic (int metric)
{
    return metric == faiss::METRIC_L2 || metric == faiss::METRIC_INNER_PRODUCT;
}

//  Metrics whose distance between finite vectors is never NaN (sums of
//  |x - y|^p): HNSW sorts neighbours with std::sort, which may read out of
//  its range when NaN breaks the ordering. Canberra, BrayCurtis and
//  JensenShannon give NaN for zero or negative components.
bool
metric_is_nan_free (int metric)
{
    return metric_is_basic (metric) || metric == faiss::METRIC_L1
        || metric == faiss::METRIC_Linf || metric == faiss::METRIC_Lp;
}

void
check_metrics (const faiss::Index *index, int depth)
{
    if (!index || depth > S_DEPTH_MAX)
        return;                             //  check_index refuses these
    int metric = index->metric_type;
    if (auto map = dynamic_cast<const faiss::IndexIDMap *> (index))
        check_metrics (map->index, depth + 1);
    else if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
        check_metrics (pt->index, depth + 1);
    else if (dynamic_cast<const faiss::IndexFlat *> (index)
         &&  !dynamic_cast<const faiss::IndexFlat1D *> (index))
        return;                             //  knn_extra_metrics computes every metric
    else if (auto hnsw = dynamic_cast<const faiss::IndexHNSW *> (index)) {
        const faiss::Index *storage = hnsw->storage;
        if (!metric_is_nan_free (metric) || (storage && !metric_is_nan_free (storage->metric_type)))
            reject ("HNSW with metric %d: only L2, inner product, L1, Linf and Lp (never NaN) "
                    "are accepted", storage && metric_is_nan_free (metric) ? storage->metric_type : metric);
        if (storage && !metric_is_basic (storage->metric_type)
        &&  !dynamic_cast<const faiss::IndexFlat *> (storage))
            reject ("HNSW over a non-flat storage with metric %d", storage->metric_type);
        check_metrics (storage, depth + 1);
    }
    else if (!metric_is_basic (metric))
        reject ("metric %d works with IndexFlat, IndexHNSWFlat and IDMap / PreTransform around "
                "them only, not with %s", metric, typeid (*index).name ());
    else if (auto ivf = dynamic_cast<const faiss::IndexIVF *> (index))
        check_metrics (ivf->quantizer, depth + 1);
    else if (auto refine = dynamic_cast<const faiss::IndexRefine *> (index)) {
        check_metrics (refine->base_index, depth + 1);
        check_metrics (refine->refine_index, depth + 1);
    }
}

void
check_pq (const faiss::ProductQuantizer &pq, int d)
{
    if (pq.d != (size_t) d || pq.M < 1 || pq.M > pq.d || pq.d % pq.M || pq.dsub * pq.M != pq.d)
        reject ("PQ of M = %zu for d = %zu (index d = %d)", pq.M, pq.d, d);
    if (pq.nbits < 1 || pq.nbits > 16 || pq.ksub != ((size_t) 1 << pq.nbits))
        reject ("PQ nbits = %zu out of [1, 16]", pq.nbits);
    if (pq.code_size != (pq.nbits * pq.M + 7) / 8)
        reject ("PQ code size %zu for M = %zu, nbits = %zu", pq.code_size, pq.M, pq.nbits);
    if (pq.centroids.size () != pq.M * pq.ksub * pq.dsub)
        reject ("PQ centroid table of %zu floats, expected %zu", pq.centroids.size (),
                pq.M * pq.ksub * pq.dsub);
    need_finite (pq.centroids.data (), pq.centroids.size (), "PQ centroids");
    if (!pq.sdc_table.empty () && pq.sdc_table.size () != pq.M * pq.ksub * pq.ksub)
        reject ("PQ SDC table of %zu floats", pq.sdc_table.size ());
}

void
check_sq (const faiss::ScalarQuantizer &sq, int d, bool trained)
{
    int qtype = (int) sq.qtype;
    if (qtype < faiss::ScalarQuantizer::QT_8bit || qtype > faiss::ScalarQuantizer::QT_6bit)
        reject ("scalar quantizer type %d is not known", qtype);
    if (sq.d != (size_t) d || sq.code_size != sq_code_size (qtype, sq.d))
        reject ("scalar quantizer of d = %zu, code size %zu (index d = %d)", sq.d, sq.code_size, d);
    size_t expected = sq_trained_size (qtype, sq.d);
    if (sq.trained.size () != expected && (trained || !sq.trained.empty ()))
        reject ("scalar quantizer has %zu trained values, expected %zu", sq.trained.size (), expected);
    need_finite (sq.trained.data (), sq.trained.size (), "scalar quantizer trained values");
}

void
check_codes (const faiss::IndexFlatCodes *index, size_t code_size, const char *what)
{
    if (index->code_size != code_size || index->codes.size () != (size_t) index->ntotal * code_size)
        reject ("%s: %zu bytes of codes of %zu for %lld vectors (expected %zu a vector)", what,
                index->codes.size (), index->code_size, (long long) index->ntotal, code_size);
}

void
check_flat (const faiss::IndexFlat *flat)
{
    check_codes (flat, (size_t) flat->d * sizeof (float), "Flat");
    need_finite (reinterpret_cast<const float *> (flat->codes.data ()),
                 flat->codes.size () / sizeof (float), "Flat vectors");
}

void
check_linear (const faiss::LinearTransform *lt)
{
    size_t size = (size_t) lt->d_in * lt->d_out;
    if (lt->A.size () != size && (lt->is_trained || !lt->A.empty ()))
        reject ("transform matrix of %zu floats for %d -> %d", lt->A.size (), lt->d_in, lt->d_out);
    if (!(lt->b.empty () || lt->b.size () == (size_t) lt->d_out)
    ||  (lt->have_bias && lt->is_trained && lt->b.size () != (size_t) lt->d_out))
        reject ("transform bias of %zu floats for d_out = %d", lt->b.size (), lt->d_out);
    need_finite (lt->A.data (), lt->A.size (), "transform matrix");
    need_finite (lt->b.data (), lt->b.size (), "transform bias");
}

void
check_transform (const faiss::VectorTransform *vt)
{
    if (!vt)
        reject ("missing transform");
    if (vt->d_in < 1 || vt->d_in > FPX_DIM_MAX || vt->d_out < 1 || vt->d_out > FPX_DIM_MAX)
        reject ("transform dimensions %d -> %d", vt->d_in, vt->d_out);
    if (is_exactly<faiss::PCAMatrix> (vt)) {
        auto pca = static_cast<const faiss::PCAMatrix *> (vt);
        need_finite (pca->mean.data (), pca->mean.size (), "PCA mean");
        check_linear (pca);
    }
    else if (is_exactly<faiss::LinearTransform> (vt) || is_exactly<faiss::OPQMatrix> (vt)
         ||  is_exactly<faiss::RandomRotationMatrix> (vt))
        check_linear (static_cast<const faiss::LinearTransform *> (vt));
    else if (is_exactly<faiss::NormalizationTransform> (vt)) {
        auto norm = static_cast<const faiss::NormalizationTransform *> (vt);
        if (vt->d_in != vt->d_out || !std::isfinite (norm->norm))
            reject ("normalization %d -> %d, norm %g", vt->d_in, vt->d_out, (double) norm->norm);
    }
    else if (is_exactly<faiss::CenteringTransform> (vt)) {
        auto center = static_cast<const faiss::CenteringTransform *> (vt);
        if (vt->d_in != vt->d_out
        ||  (center->mean.size () != (size_t) vt->d_in && (vt->is_trained || !center->mean.empty ())))
            reject ("centering %d -> %d with a mean of %zu floats", vt->d_in, vt->d_out,
                    center->mean.size ());
        need_finite (center->mean.data (), center->mean.size (), "centering mean");
    }
    else
        reject ("transform class %s is not accepted", typeid (*vt).name ());
}

void
check_direct_map (const faiss::IndexIVF *ivf, const faiss::ArrayInvertedLists *lists)
{
    const faiss::DirectMap &dm = ivf->direct_map;
    auto valid = [&] (int64_t lo, int64_t key) {
        uint64_t list = faiss::lo_listno (lo), offset = faiss::lo_offset (lo);
        return lo >= 0 && list < lists->nlist && offset < lists->ids [list].size ()
            && lists->ids [list][offset] == key;
    };
    if (dm.type == faiss::DirectMap::NoMap) {
        if (!dm.array.empty () || !dm.hashtable.empty ())
            reject ("direct map of type none holds entries");
    }
    else if (dm.type == faiss::DirectMap::Array) {
        if (dm.array.size () != (size_t) ivf->ntotal || !dm.hashtable.empty ())
            reject ("direct map array of %zu entries for %lld vectors", dm.array.size (),
                    (long long) ivf->ntotal);
        for (size_t i = 0; i < dm.array.size (); i++)
            if (!valid (dm.array [i], (int64_t) i))
                reject ("direct map entry %zu points to no such list entry", i);
    }
    else if (dm.type == faiss::DirectMap::Hashtable) {
        if (!dm.array.empty () || dm.hashtable.size () != (size_t) ivf->ntotal)
            reject ("direct map hash table of %zu entries for %lld vectors",
                    dm.hashtable.size (), (long long) ivf->ntotal);
        for (const auto &kv : dm.hashtable)
            if (!valid (kv.second, kv.first))
                reject ("direct map entry for id %lld points to no such list entry",
                        (long long) kv.first);
    }
    else
        reject ("direct map type %d is not known", (int) dm.type);
}

void
check_ivf (const faiss::IndexIVF *ivf, Context ctx, int depth)
{
    if (ivf->nlist < 1 || ivf->nlist > S_COUNT_MAX)
        reject ("nlist %zu out of [1, %llu]", ivf->nlist, (unsigned long long) S_COUNT_MAX);
    if (ivf->nprobe < 1 || ivf->nprobe > S_COUNT_MAX)
        reject ("nprobe %zu out of [1, %llu]", ivf->nprobe, (unsigned long long) S_COUNT_MAX);
    if (ivf->max_codes > (size_t) 1e15)
        reject ("max_codes %zu out of range", ivf->max_codes);
    const faiss::Index *q = ivf->quantizer;
    if (!q)
        reject ("IVF index without a quantizer");
    bool quantizer_ok = is_exactly<faiss::IndexFlat> (q) || is_exactly<faiss::IndexFlatL2> (q)
                     || is_exactly<faiss::IndexFlatIP> (q) || is_exactly<faiss::IndexHNSWFlat> (q)
                     || is_exactly<faiss::IndexHNSWSQ> (q) || is_exactly<faiss::IndexHNSWPQ> (q);
    if (!quantizer_ok)
        reject ("IVF quantizer class %s is not accepted", typeid (*q).name ());
    check_index (q, Context { true }, depth + 1);
    if (q->d != ivf->d)
        reject ("quantizer dimension %d differs from the index's %d", q->d, ivf->d);
    if ((size_t) q->ntotal != ivf->nlist && (ivf->is_trained || q->ntotal != 0))
        reject ("quantizer holds %lld centroids for %zu lists", (long long) q->ntotal, ivf->nlist);
    if (!ivf->is_trained && ivf->ntotal != 0)
        reject ("untrained IVF index holds %lld vectors", (long long) ivf->ntotal);

    const faiss::InvertedLists *il = ivf->invlists;
    if (!is_exactly<faiss::ArrayInvertedLists> (il))
        reject ("IVF inverted lists must be in memory (ArrayInvertedLists)");
    auto lists = static_cast<const faiss::ArrayInvertedLists *> (il);
    if (lists->nlist != ivf->nlist || lists->code_size != ivf->code_size
    ||  lists->ids.size () != ivf->nlist || lists->codes.size () != ivf->nlist)
        reject ("inverted lists of %zu lists × %zu bytes, the index has %zu × %zu",
                lists->nlist, lists->code_size, ivf->nlist, ivf->code_size);
    size_t total = 0;
    for (size_t i = 0; i < lists->nlist; i++) {
        const auto &ids = lists->ids [i];
        if (lists->codes [i].size () != ids.size () * lists->code_size)
            reject ("inverted list %zu holds %zu ids and %zu code bytes", i, ids.size (),
                    lists->codes [i].size ());
        total += ids.size ();
        if (ctx.positional)
            for (int64_t id : ids)
                if (id < 0 || id >= ivf->ntotal)
                    reject ("inverted list %zu holds id %lld where positions [0, %lld) are "
                            "expected", i, (long long) id, (long long) ivf->ntotal);
    }
    if (total != (size_t) ivf->ntotal)
        reject ("inverted lists hold %zu entries, the index says ntotal = %lld", total,
                (long long) ivf->ntotal);
    check_direct_map (ivf, lists);

    if (is_exactly<faiss::IndexIVFFlat> (ivf)) {
        if (ivf->code_size != (size_t) ivf->d * sizeof (float))
            reject ("IVFFlat code size %zu for d = %d", ivf->code_size, ivf->d);
        for (size_t i = 0; i < lists->nlist; i++)
            need_finite (reinterpret_cast<const float *> (lists->codes [i].data ()),
                         lists->codes [i].size () / sizeof (float), "IVFFlat vectors");
    }
    else if (is_exactly<faiss::IndexIVFPQ> (ivf)) {
        auto ivfpq = static_cast<const faiss::IndexIVFPQ *> (ivf);
        check_pq (ivfpq->pq, ivf->d);
        if (ivf->code_size != ivfpq->pq.code_size)
            reject ("IVFPQ code size %zu, its PQ's is %zu", ivf->code_size, ivfpq->pq.code_size);
        size_t table = ivf->nlist * ivfpq->pq.M * ivfpq->pq.ksub;
        if (ivfpq->use_precomputed_table < 0 || ivfpq->use_precomputed_table > 1
        ||  (ivfpq->use_precomputed_table == 1 && ivfpq->precomputed_table.size () != table))
            reject ("IVFPQ precomputed table (%d) of %zu floats", ivfpq->use_precomputed_table,
                    ivfpq->precomputed_table.size ());
    }
    else if (is_exactly<faiss::IndexIVFScalarQuantizer> (ivf)) {
        auto ivfsq = static_cast<const faiss::IndexIVFScalarQuantizer *> (ivf);
        check_sq (ivfsq->sq, ivf->d, ivf->is_trained);
        if (ivf->code_size != ivfsq->sq.code_size)
            reject ("IVFScalarQuantizer code size %zu, its quantizer's is %zu", ivf->code_size,
                    ivfsq->sq.code_size);
    }
    else
        reject ("IVF class %s is not accepted", typeid (*ivf).name ());
}

void
check_hnsw_graph (const faiss::HNSW &g, int64_t ntotal)
{
    size_t nlevels = g.cum_nneighbor_per_level.size ();
    if (g.assign_probas.empty () || g.assign_probas.size () > S_HNSW_LEVELS_MAX
    ||  nlevels != g.assign_probas.size () + 1 || g.cum_nneighbor_per_level [0] != 0)
        reject ("HNSW has %zu level probabilities and %zu level sizes", g.assign_probas.size (),
                nlevels);
    for (double p : g.assign_probas)
        if (!(p >= 0 && p <= 1))
            reject ("HNSW level probability %g out of [0, 1]", p);
    for (size_t l = 1; l < nlevels; l++)
        if (g.cum_nneighbor_per_level [l] < g.cum_nneighbor_per_level [l - 1]
        ||  g.cum_nneighbor_per_level [l] > (1 << 20))
            reject ("HNSW neighbors per level are not increasing and bounded");
    if (g.levels.size () != (size_t) ntotal || g.offsets.size () != (size_t) ntotal + 1
    ||  g.offsets [0] != 0 || g.neighbors.size () != g.offsets.back ())
        reject ("HNSW graph arrays (%zu levels, %zu offsets, %zu neighbors) do not fit %lld "
                "vectors", g.levels.size (), g.offsets.size (), g.neighbors.size (),
                (long long) ntotal);
    int top = 0;
    for (int64_t i = 0; i < ntotal; i++) {
        int level = g.levels [i];
        if (level < 1 || (size_t) level >= nlevels)
            reject ("HNSW node %lld has level %d out of [1, %zu]", (long long) i, level,
                    nlevels - 1);
        if (g.offsets [i + 1] < g.offsets [i]
        ||  g.offsets [i + 1] - g.offsets [i] != (size_t) g.cum_nneighbor_per_level [level])
            reject ("HNSW offsets of node %lld do not match its level", (long long) i);
        top = std::max (top, level);
    }
    //  Every link in range, and to a node that has the level it is found at.
    for (int64_t i = 0; i < ntotal; i++)
        for (int l = 0; l < g.levels [i]; l++)
            for (size_t j = g.offsets [i] + g.cum_nneighbor_per_level [l];
                 j < g.offsets [i] + g.cum_nneighbor_per_level [l + 1]; j++) {
                int v = g.neighbors [j];
                if (v < -1 || v >= ntotal)
                    reject ("HNSW node %lld links to %d, out of [-1, %lld)", (long long) i, v,
                            (long long) ntotal);
                if (v >= 0 && g.levels [v] <= l)
                    reject ("HNSW node %lld links at level %d to node %d of level %d",
                            (long long) i, l, v, g.levels [v] - 1);
            }
    if (ntotal == 0) {
        if (g.entry_point != -1 || g.max_level != -1)
            reject ("empty HNSW graph with entry point %d, max level %d", g.entry_point,
                    g.max_level);
    }
    else if (g.entry_point < 0 || g.entry_point >= ntotal || g.max_level != top - 1
         ||  g.levels [g.entry_point] != top)
        reject ("HNSW entry point %d (max level %d) out of range or not on the top level",
                g.entry_point, g.max_level);
    if (g.efSearch < 1 || (uint64_t) g.efSearch > S_COUNT_MAX
    ||  g.efConstruction < 1 || (uint64_t) g.efConstruction > S_COUNT_MAX
    ||  g.upper_beam < 1 || (uint64_t) g.upper_beam > S_COUNT_MAX)
        reject ("HNSW efSearch %d, efConstruction %d, upper_beam %d out of [1, %llu]",
                g.efSearch, g.efConstruction, g.upper_beam, (unsigned long long) S_COUNT_MAX);
}

void
check_hnsw (const faiss::IndexHNSW *hnsw, int depth)
{
    const faiss::Index *storage = hnsw->storage;
    bool storage_ok;
    if (is_exactly<faiss::IndexHNSWFlat> (hnsw))
        storage_ok = is_exactly<faiss::IndexFlat> (storage) || is_exactly<faiss::IndexFlatL2> (storage)
                  || is_exactly<faiss::IndexFlatIP> (storage);
    else if (is_exactly<faiss::IndexHNSWSQ> (hnsw))
        storage_ok = is_exactly<faiss::IndexScalarQuantizer> (storage);
    else if (is_exactly<faiss::IndexHNSWPQ> (hnsw))
        storage_ok = is_exactly<faiss::IndexPQ> (storage);
    else
        reject ("HNSW class %s is not accepted", typeid (*hnsw).name ());
    if (!storage_ok)
        reject ("HNSW storage of class %s is not accepted",
                storage ? typeid (*storage).name () : "none");
    check_index (storage, Context { true }, depth + 1);
    if (storage->d != hnsw->d || storage->ntotal != hnsw->ntotal)
        reject ("HNSW storage holds %lld vectors of %d dimensions, the graph %lld of %d",
                (long long) storage->ntotal, storage->d, (long long) hnsw->ntotal, hnsw->d);
    check_hnsw_graph (hnsw->hnsw, hnsw->ntotal);
}

void
check_index (const faiss::Index *index, Context ctx, int depth)
{
    if (!index)
        reject ("missing sub-index");
    if (depth > S_DEPTH_MAX)
        reject ("indexes nested more than %d deep", S_DEPTH_MAX);
    check_common (index);
    if (is_exactly<faiss::IndexFlat> (index) || is_exactly<faiss::IndexFlatL2> (index)
    ||  is_exactly<faiss::IndexFlatIP> (index))
        check_flat (static_cast<const faiss::IndexFlat *> (index));
    else if (is_exactly<faiss::IndexPQ> (index)) {
        auto pq = static_cast<const faiss::IndexPQ *> (index);
        check_pq (pq->pq, pq->d);
        check_codes (pq, pq->pq.code_size, "PQ");
        if ((int) pq->search_type < faiss::IndexPQ::ST_PQ
        ||  (int) pq->search_type > faiss::IndexPQ::ST_polysemous_generalize)
            reject ("PQ search type %d is not known", (int) pq->search_type);
    }
    else if (is_exactly<faiss::IndexScalarQuantizer> (index)) {
        auto sq = static_cast<const faiss::IndexScalarQuantizer *> (index);
        check_sq (sq->sq, sq->d, sq->is_trained);
        check_codes (sq, sq->sq.code_size, "ScalarQuantizer");
    }
    else if (is_exactly<faiss::IndexLSH> (index)) {
        auto lsh = static_cast<const faiss::IndexLSH *> (index);
        if (lsh->nbits < 1 || lsh->nbits > FPX_DIM_MAX)
            reject ("LSH nbits %d out of [1, %d]", lsh->nbits, FPX_DIM_MAX);
        check_codes (lsh, (size_t) (lsh->nbits + 7) / 8, "LSH");
        size_t nthresholds = lsh->thresholds.size ();
        bool thresholds_used = lsh->train_thresholds && lsh->is_trained;
        if (thresholds_used ? nthresholds != (size_t) lsh->nbits
                            : nthresholds != 0 && nthresholds != (size_t) lsh->nbits)
            reject ("LSH has %zu thresholds for %d bits", nthresholds, lsh->nbits);
        need_finite (lsh->thresholds.data (), nthresholds, "LSH thresholds");
        if (lsh->rrot.d_in != lsh->d || lsh->rrot.d_out != lsh->nbits)
            reject ("LSH rotation %d -> %d for d = %d, nbits = %d", lsh->rrot.d_in,
                    lsh->rrot.d_out, lsh->d, lsh->nbits);
        if (lsh->rotate_data) {
            if (lsh->is_trained && (!lsh->rrot.is_trained
                                    || lsh->rrot.A.size () != (size_t) lsh->d * lsh->nbits))
                reject ("LSH rotation is not trained (%zu floats)", lsh->rrot.A.size ());
            check_linear (&lsh->rrot);
        }
        else if (lsh->nbits > lsh->d)
            reject ("LSH without rotation needs nbits (%d) <= d (%d)", lsh->nbits, lsh->d);
    }
    else if (is_exactly<faiss::IndexIVFFlat> (index) || is_exactly<faiss::IndexIVFPQ> (index)
         ||  is_exactly<faiss::IndexIVFScalarQuantizer> (index))
        check_ivf (static_cast<const faiss::IndexIVF *> (index), ctx, depth);
    else if (is_exactly<faiss::IndexHNSWFlat> (index) || is_exactly<faiss::IndexHNSWSQ> (index)
         ||  is_exactly<faiss::IndexHNSWPQ> (index))
        check_hnsw (static_cast<const faiss::IndexHNSW *> (index), depth);
    else if (is_exactly<faiss::IndexIDMap> (index) || is_exactly<faiss::IndexIDMap2> (index)) {
        auto map = static_cast<const faiss::IndexIDMap *> (index);
        if (!map->index)
            reject ("IDMap without an index");
        check_index (map->index, Context { true }, depth + 1);
        if (map->index->d != map->d || map->index->ntotal != map->ntotal
        ||  map->id_map.size () != (size_t) map->ntotal)
            reject ("IDMap of %zu ids over an index of %lld vectors, it says %lld",
                    map->id_map.size (), (long long) map->index->ntotal, (long long) map->ntotal);
        if (ctx.positional)
            for (int64_t id : map->id_map)
                if (id < 0 || id >= map->ntotal)
                    reject ("IDMap id %lld where positions are expected", (long long) id);
        if (is_exactly<faiss::IndexIDMap2> (index)
        &&  static_cast<const faiss::IndexIDMap2 *> (index)->rev_map.size () > map->id_map.size ())
            reject ("IDMap2 reverse map larger than its id map");
    }
    else if (is_exactly<faiss::IndexPreTransform> (index)) {
        auto pt = static_cast<const faiss::IndexPreTransform *> (index);
        if (pt->chain.size () > (size_t) S_CHAIN_MAX || !pt->index)
            reject ("PreTransform of %zu transforms", pt->chain.size ());
        int d = pt->d;
        bool trained = true;
        for (size_t i = 0; i < pt->chain.size (); i++) {
            check_transform (pt->chain [i]);
            if (pt->chain [i]->d_in != d)
                reject ("transform %zu takes %d dimensions, it is given %d", i,
                        pt->chain [i]->d_in, d);
            d = pt->chain [i]->d_out;
            trained = trained && pt->chain [i]->is_trained;
        }
        check_index (pt->index, ctx, depth + 1);
        if (pt->index->d != d || pt->index->ntotal != pt->ntotal)
            reject ("PreTransform over an index of %lld vectors of %d dimensions, expected "
                    "%lld of %d", (long long) pt->index->ntotal, pt->index->d,
                    (long long) pt->ntotal, d);
        if (pt->is_trained && !(trained && pt->index->is_trained))
            reject ("PreTransform says trained, its parts are not");
        if (!trained && pt->ntotal != 0)
            reject ("PreTransform with untrained transforms holds vectors");
    }
    else if (is_exactly<faiss::IndexRefineFlat> (index) || is_exactly<faiss::IndexRefine> (index)) {
        auto refine = static_cast<const faiss::IndexRefine *> (index);
        const faiss::Index *base = refine->base_index, *exact = refine->refine_index;
        if (!base || !exact)
            reject ("RefineFlat without its indexes");
        if (!(is_exactly<faiss::IndexFlat> (exact) || is_exactly<faiss::IndexFlatL2> (exact)
              || is_exactly<faiss::IndexFlatIP> (exact)))
            reject ("RefineFlat refinement index of class %s", typeid (*exact).name ());
        check_index (base, Context { true }, depth + 1);
        check_index (exact, Context { true }, depth + 1);
        if (base->d != refine->d || exact->d != refine->d || base->ntotal != refine->ntotal
        ||  exact->ntotal != refine->ntotal)
            reject ("RefineFlat over indexes of %lld and %lld vectors, it says %lld",
                    (long long) base->ntotal, (long long) exact->ntotal, (long long) refine->ntotal);
        if (!(refine->k_factor >= 1 && refine->k_factor <= 1e6f))
            reject ("RefineFlat k_factor %g out of [1, 1e6]", (double) refine->k_factor);
    }
    else
        reject ("index class %s is not accepted", typeid (*index).name ());
}

int
report (const Reject &r, char *err, size_t err_size)
{
    if (err && err_size)
        snprintf (err, err_size, "%s", r.message.c_str ());
    return FPX_EINVAL;
}

}   // namespace

extern "C" int
fpx_upload_check_bytes (const uint8_t *bytes, size_t size, char *err, size_t err_size)
{
    try {
        if (!bytes || size == 0)
            reject ("no bytes");
        Walker w { bytes, bytes, bytes + size };
        walk_index (w, Role::any, 0);
        if (w.left ())
            reject ("%zu bytes follow the index", w.left ());
        return 0;
    }
    catch (const Reject &r) {
        return report (r, err, err_size);
    }
    catch (const std::exception &e) {       //  std::bad_alloc of the list sizes
        return report (Reject { std::string ("uploaded index: ") + e.what () }, err, err_size);
    }
}

extern "C" int
fpx_upload_check_metrics (const FaissIndex *index, char *err, size_t err_size)
{
    try {
        check_metrics (reinterpret_cast<const faiss::Index *> (index), 0);
        return 0;
    }
    catch (const Reject &r) {           //  not an upload here: without reject's prefix
        const std::string prefix = "uploaded index: ";
        bool prefixed = r.message.compare (0, prefix.size (), prefix) == 0;
        return report (Reject { prefixed ? r.message.substr (prefix.size ()) : r.message },
                       err, err_size);
    }
}

extern "C" int
fpx_upload_check_index (const FaissIndex *index, char *err, size_t err_size)
{
    try {
        check_index (reinterpret_cast<const faiss::Index *> (index), Context {}, 0);
        check_metrics (reinterpret_cast<const faiss::Index *> (index), 0);
        return 0;
    }
    catch (const Reject &r) {
        return report (r, err, err_size);
    }
    catch (const std::exception &e) {
        return report (Reject { std::string ("uploaded index: ") + e.what () }, err, err_size);
    }
}
