/*  shim_objects.cpp — objects: construct, attach and detach, subobjects,
    clone, attributes, transforms, k-means, merge, standalone codes.
*/
#include "shim_internal.h"

#include <type_traits>

using namespace fpx_shim_internal;

// ---- objects: composition, attributes, transforms, k-means ----------------

namespace {

const double S_COUNT_MAX = 1 << 20;      //  nlist, HNSW links, … (as for factory strings)

//  Positional numeric arguments of construct, each checked on read.
struct Args {
    int n;
    const double *v;
    const char *type;

    double number (int i, const char *what, double lo, double hi, double fallback, bool required) const
    {
        if (i >= n) {
            if (required)
                bad (std::string (type) + ": missing argument " + what);
            return fallback;
        }
        if (!(v [i] >= lo && v [i] <= hi))
            bad (std::string (type) + ": argument " + what + " out of range");
        return v [i];
    }
    long integer (int i, const char *what, double lo, double hi, double fallback, bool required) const
    {
        double value = number (i, what, lo, hi, fallback, required);
        if (value != (double) (long) value)
            bad (std::string (type) + ": argument " + what + " must be an integer");
        return (long) value;
    }
    int dim (int i, const char *what = "d") const { return (int) integer (i, what, 1, 65536, 0, true); }
    faiss::MetricType metric (int i) const
    {
        return (faiss::MetricType) integer (i, "metric", 0, 1, 1, false);
    }
    //  Where FAISS's extra metrics work (fpx_upload_check_metrics says
    //  where and why): any metric for IndexFlat.
    faiss::MetricType any_metric (int i) const
    {
        long m = integer (i, "metric", 0, FPX_METRIC_MAX, 1, false);
        if (!fpx_metric_is_valid (m))
            bad (std::string (type) + ": metric " + std::to_string (m) + " is not known");
        return (faiss::MetricType) m;
    }
    faiss::ScalarQuantizer::QuantizerType qtype (int i) const
    {
        return (faiss::ScalarQuantizer::QuantizerType) integer (i, "qtype", 0,
                faiss::ScalarQuantizer::QT_6bit, 0, true);
    }
};

faiss::VectorTransform *as_transform (FaissVectorTransform *t) { return reinterpret_cast<faiss::VectorTransform *> (t); }
const faiss::VectorTransform *as_transform (const FaissVectorTransform *t) { return reinterpret_cast<const faiss::VectorTransform *> (t); }

//  The references a class takes: 'i' index, 't' transform.
struct Refs {
    int n;
    FaissIndex *const *indexes;
    FaissVectorTransform *const *transforms;
    const char *type;

    void expect (const char *kinds) const
    {
        int want = (int) strlen (kinds);
        if (n != want)
            bad (std::string (type) + " takes " + std::to_string (want) + " object reference(s)");
        for (int i = 0; i < want; i++)
            if ((kinds [i] == 'i' && !indexes [i]) || (kinds [i] == 't' && !transforms [i]))
                bad (std::string (type) + ": reference " + std::to_string (i) + " must be "
                     + (kinds [i] == 'i' ? "an index" : "a vector transform"));
    }
    faiss::Index *index (int i) const { return as_mutable (indexes [i]); }
};

faiss::Index *
quantized (const Args &args, const Refs &refs, int d)
{
    faiss::Index *quantizer = refs.index (0);
    if (quantizer->d != d)
        bad (std::string (args.type) + ": quantizer dimension " + std::to_string (quantizer->d)
             + " differs from d = " + std::to_string (d));
    return quantizer;
}

faiss::Index *
construct_index (const char *type, const Args &a, const Refs &refs)
{
    std::string t = type;
    if (t == "IndexFlat" || t == "IndexFlatL2" || t == "IndexFlatIP") {
        refs.expect ("");
        int d = a.dim (0);
        if (t == "IndexFlatL2") return new faiss::IndexFlatL2 (d);
        if (t == "IndexFlatIP") return new faiss::IndexFlatIP (d);
        return new faiss::IndexFlat (d, a.any_metric (1));
    }
    if (t == "IndexIVFFlat" || t == "IndexIVFPQ" || t == "IndexIVFScalarQuantizer") {
        refs.expect ("i");
        int d = a.dim (0);
        size_t nlist = (size_t) a.integer (1, "nlist", 1, S_COUNT_MAX, 0, true);
        faiss::Index *quantizer = quantized (a, refs, d);
        faiss::IndexIVF *ivf;
        if (t == "IndexIVFFlat")
            ivf = new faiss::IndexIVFFlat (quantizer, d, nlist, a.metric (2));
        else if (t == "IndexIVFPQ") {
            long M = a.integer (2, "M", 1, d, 0, true);
            long nbits = a.integer (3, "nbits", 1, 16, 8, false);
            if (d % M)
                bad ("IndexIVFPQ: d must be a multiple of M");
            ivf = new faiss::IndexIVFPQ (quantizer, d, nlist, (size_t) M, (size_t) nbits, a.metric (4));
        }
        else
            ivf = new faiss::IndexIVFScalarQuantizer (quantizer, d, nlist, a.qtype (2), a.metric (3),
                                                      a.integer (4, "encode_residual", 0, 1, 1, false));
        ivf->own_fields = true;
        return ivf;
    }
    if (t == "IndexHNSWFlat") {
        refs.expect ("");
        int d = a.dim (0);
        int M = (int) a.integer (1, "M", 2, 512, 32, false);
        faiss::MetricType metric = a.any_metric (2);
        if (metric != faiss::METRIC_L2 && metric != faiss::METRIC_INNER_PRODUCT
        &&  metric != faiss::METRIC_L1 && metric != faiss::METRIC_Linf && metric != faiss::METRIC_Lp)
            bad ("IndexHNSWFlat: metric " + std::to_string ((int) metric) + " can give NaN "
                 "distances, which HNSW cannot order (L2, inner product, L1, Linf, Lp only)");
        return new faiss::IndexHNSWFlat (d, M, metric);
    }
    if (t == "IndexHNSWSQ") {
        refs.expect ("");
        int d = a.dim (0);
        return new faiss::IndexHNSWSQ (d, a.qtype (1), (int) a.integer (2, "M", 2, 512, 32, false), a.metric (3));
    }
    if (t == "IndexPQ") {
        refs.expect ("");
        int d = a.dim (0);
        long M = a.integer (1, "M", 1, d, 0, true);
        long nbits = a.integer (2, "nbits", 1, 16, 8, false);
        if (d % M)
            bad ("IndexPQ: d must be a multiple of M");
        return new faiss::IndexPQ (d, (size_t) M, (size_t) nbits, a.metric (3));
    }
    if (t == "IndexScalarQuantizer") {
        refs.expect ("");
        int d = a.dim (0);
        return new faiss::IndexScalarQuantizer (d, a.qtype (1), a.metric (2));
    }
    if (t == "IndexLSH") {
        refs.expect ("");
        int d = a.dim (0);
        int nbits = (int) a.integer (1, "nbits", 1, 65536, 0, true);
        return new faiss::IndexLSH (d, nbits, a.integer (2, "rotate_data", 0, 1, 1, false),
                                    a.integer (3, "train_thresholds", 0, 1, 0, false));
    }
    if (t == "IndexIDMap" || t == "IndexIDMap2") {
        refs.expect ("i");
        if (refs.index (0)->ntotal != 0)
            bad (t + ": the wrapped index must be empty");
        faiss::IndexIDMap *map = t == "IndexIDMap" ? new faiss::IndexIDMap (refs.index (0))
                                                   : new faiss::IndexIDMap2 (refs.index (0));
        map->own_fields = true;
        return map;
    }
    if (t == "IndexShards" || t == "IndexReplicas") {
        //  Parts come with attach; never FAISS's own threads here (the
        //  worker's OpenMP threads do the work).
        refs.expect ("");
        int d = a.dim (0);
        if (t == "IndexReplicas")
            return new faiss::IndexReplicas (d, false);
        return new faiss::IndexShards (d, false, a.integer (1, "successive_ids", 0, 1, 1, false));
    }
    if (t == "IndexPreTransform" && refs.n == 1) {     //  no transform yet: prepend_transform adds them
        refs.expect ("i");
        auto pt = new faiss::IndexPreTransform (refs.index (0));
        pt->own_fields = true;
        return pt;
    }
    if (t == "IndexPreTransform") {
        refs.expect ("ti");
        faiss::VectorTransform *transform = as_transform (refs.transforms [0]);
        if (transform->d_out != refs.index (1)->d)
            bad ("IndexPreTransform: transform output dimension differs from the index dimension");
        auto pt = new faiss::IndexPreTransform (transform, refs.index (1));
        pt->own_fields = true;
        return pt;
    }
    if (t == "IndexRefine") {
        //  FAISS's IndexRefine reads refine_index's distance computer at
        //  the base index's labels inside an OpenMP region, unchecked: the
        //  refinement index must be a flat one (its computer never throws)
        //  and the base's labels its positions (in range).
        refs.expect ("ii");
        faiss::Index *base = refs.index (0), *exact = refs.index (1);
        auto flat = dynamic_cast<faiss::IndexFlat *> (exact);
        if (!flat || dynamic_cast<faiss::IndexFlat1D *> (exact))
            bad ("IndexRefine: the refinement index must be an IndexFlat");
        if (!fpx_shim_keys_are_positions (reinterpret_cast<FaissIndex *> (base)))
            bad ("IndexRefine: the base index must label vectors by position (no IDMap, no IVF)");
        if (base->metric_type != faiss::METRIC_L2 && base->metric_type != faiss::METRIC_INNER_PRODUCT)
            bad ("IndexRefine: the base index's metric must be L2 or inner product");
        auto refine = new faiss::IndexRefine (base, exact);    //  checks d, metric, ntotal
        refine->own_fields = refine->own_refine_index = true;
        return refine;
    }
    if (t == "IndexRefineFlat") {
        refs.expect ("i");
        if (refs.index (0)->metric_type != faiss::METRIC_L2
        &&  refs.index (0)->metric_type != faiss::METRIC_INNER_PRODUCT)
            bad ("IndexRefineFlat: the base index's metric must be L2 or inner product");
        auto refine = new faiss::IndexRefineFlat (refs.index (0));
        refine->own_fields = true;
        refine->k_factor = (float) a.number (0, "k_factor", 1, 1e6, 1, false);
        return refine;
    }
    return nullptr;
}

faiss::VectorTransform *
construct_transform (const char *type, const Args &a, const Refs &refs)
{
    std::string t = type;
    if (t == "PCAMatrix") {
        refs.expect ("");
        int d_in = a.dim (0, "d_in");
        int d_out = (int) a.integer (1, "d_out", 1, d_in, d_in, false);
        return new faiss::PCAMatrix (d_in, d_out, (float) a.number (2, "eigen_power", -1e3, 1e3, 0, false),
                                     a.integer (3, "random_rotation", 0, 1, 0, false));
    }
    if (t == "OPQMatrix") {
        refs.expect ("");
        int d = a.dim (0);
        int M = (int) a.integer (1, "M", 1, d, 1, false);
        int d2 = (int) a.integer (2, "d2", -1, 65536, -1, false);
        if ((d2 > 0 ? d2 : d) % M)
            bad ("OPQMatrix: the output dimension must be a multiple of M");
        return new faiss::OPQMatrix (d, M, d2);
    }
    if (t == "RandomRotationMatrix") {
        refs.expect ("");
        int d_in = a.dim (0, "d_in");
        return new faiss::RandomRotationMatrix (d_in, a.dim (1, "d_out"));
    }
    if (t == "NormalizationTransform") {
        refs.expect ("");
        int d = a.dim (0);
        return new faiss::NormalizationTransform (d, (float) a.number (1, "norm", 0, 1e6, 2, false));
    }
    if (t == "CenteringTransform") {
        refs.expect ("");
        return new faiss::CenteringTransform (a.dim (0));
    }
    return nullptr;
}

faiss::IndexIVF *
find_ivf (faiss::Index *index)
{
    while (index) {
        if (auto ivf = dynamic_cast<faiss::IndexIVF *> (index))
            return ivf;
        if (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index))
            index = pt->index;
        else if (auto map = dynamic_cast<faiss::IndexIDMap *> (index))
            index = map->index;
        else if (auto refine = dynamic_cast<faiss::IndexRefine *> (index))
            index = refine->base_index;
        else
            index = nullptr;
    }
    return nullptr;
}

//  Every attribute of get_attr and set_attr, and every other name FAISS's
//  ParameterSpace sets, in one table that both read: the name, the class
//  that has it, how to read it, how to write it (none: read-only) and,
//  where it can be written, its bounds. A name may have rows for several
//  classes; the first row whose class the object is answers. set_attr
//  takes the bounds of the name's settable row before it looks at the
//  object, and set_parameters (ParameterSpace) the S_SPACE rows' (verbose
//  only as 0: FAISS's verbose output would let a tenant write to the
//  server's stdout on every call).
enum { S_ATTR = 1, S_SPACE = 2 };

//  The object an attribute is read from or written to: an index or a
//  transform.
struct Object {
    faiss::Index *index;
    faiss::VectorTransform *transform;
};

//  The object as class C, or null.
template <typename C> C *
as_class (const Object &object)
{
    if constexpr (std::is_base_of_v<faiss::Index, C>)
        return dynamic_cast<C *> (object.index);
    else
        return dynamic_cast<C *> (object.transform);
}

struct Attr {
    const char *name;
    int where;              //  S_ATTR: set_attr, S_SPACE: set_parameters
    double lo, hi;
    bool (*get) (const Object &object, double *value);     //  false: not this class
    bool (*set) (const Object &object, double value);      //  null: read-only
};

//  A read-only attribute: expr, of p, the object as class C.
#define FPX_RO(name, C, expr)                                                  \
    { name, 0, 0, 0,                                                           \
      [] (const Object &o, double *v) {                                        \
          C *p = as_class<C> (o); if (p) *v = (double) (expr); return p != nullptr; \
      }, nullptr }
//  A field of p (the object as class C) read and written as type.
#define FPX_RW(name, C, field, type, where, lo, hi)                            \
    { name, where, lo, hi,                                                     \
      [] (const Object &o, double *v) {                                        \
          C *p = as_class<C> (o); if (p) *v = (double) p->field; return p != nullptr; \
      },                                                                       \
      [] (const Object &o, double v) {                                         \
          C *p = as_class<C> (o); if (p) p->field = (type) v; return p != nullptr; \
      } }
//  A name only ParameterSpace sets.
#define FPX_SPACE(name, lo, hi) { name, S_SPACE, lo, hi, nullptr, nullptr }

const Attr s_attrs [] = {
    //  Every index.
    FPX_RO ("d", faiss::Index, p->d),
    FPX_RO ("ntotal", faiss::Index, p->ntotal),
    FPX_RO ("is_trained", faiss::Index, p->is_trained),
    FPX_RO ("metric_type", faiss::Index, p->metric_type),
    FPX_RW ("metric_arg", faiss::Index, metric_arg, float, S_ATTR, -FLT_MAX, FLT_MAX),
    FPX_RO ("sa_code_size", faiss::Index, p->sa_code_size ()),
    //  IVF.
    FPX_RO ("nlist", faiss::IndexIVF, p->nlist),
    FPX_RO ("code_size", faiss::IndexIVF, p->code_size),
    //  FAISS's check_ids_sorted (): each list's ids in ascending order,
    //  what IDSelectorRange's assume_sorted relies on.
    FPX_RO ("ids_sorted", faiss::IndexIVF, p->check_ids_sorted ()),
    FPX_RW ("nprobe", faiss::IndexIVF, nprobe, size_t, S_ATTR | S_SPACE, 1, S_COUNT_MAX),
    FPX_RW ("max_codes", faiss::IndexIVF, max_codes, size_t, S_ATTR | S_SPACE, 0, 1e15),
    FPX_RW ("quantizer_trains_alone", faiss::IndexIVF, quantizer_trains_alone, char, S_ATTR, 0, 2),
    //  An IVF-PQ's precomputed tables depend on by_residual (read-only
    //  there); an IVF-SQ's codes keep their size either way.
    FPX_RO ("by_residual", faiss::IndexIVFPQ, p->by_residual),
    FPX_RW ("by_residual", faiss::IndexIVFScalarQuantizer, by_residual, bool, S_ATTR, 0, 1),
    //  The k-means parameters an IVF index trains its quantizer with
    //  (FAISS's IndexIVF::cp), as "cp.<field>".
    FPX_RW ("cp.niter", faiss::IndexIVF, cp.niter, int, S_ATTR, 1, 10000),
    FPX_RW ("cp.nredo", faiss::IndexIVF, cp.nredo, int, S_ATTR, 1, 100),
    FPX_RW ("cp.seed", faiss::IndexIVF, cp.seed, int, S_ATTR, INT32_MIN, INT32_MAX),
    FPX_RW ("cp.min_points_per_centroid", faiss::IndexIVF, cp.min_points_per_centroid, int, S_ATTR, 0, INT32_MAX),
    FPX_RW ("cp.max_points_per_centroid", faiss::IndexIVF, cp.max_points_per_centroid, int, S_ATTR, 1, INT32_MAX),
    FPX_RW ("cp.spherical", faiss::IndexIVF, cp.spherical, bool, S_ATTR, 0, 1),
    FPX_RW ("cp.int_centroids", faiss::IndexIVF, cp.int_centroids, bool, S_ATTR, 0, 1),
    FPX_RW ("cp.update_index", faiss::IndexIVF, cp.update_index, bool, S_ATTR, 0, 1),
    FPX_RW ("cp.verbose", faiss::IndexIVF, cp.verbose, bool, S_ATTR, 0, 0),
    FPX_RW ("cp.decode_block_size", faiss::IndexIVF, cp.decode_block_size, size_t, S_ATTR, 1, 1 << 24),
    //  PQ, SQ, LSH, groups, PreTransform.
    FPX_RO ("pq_M", faiss::IndexIVFPQ, p->pq.M),
    FPX_RO ("pq_M", faiss::IndexPQ, p->pq.M),
    FPX_RO ("pq_nbits", faiss::IndexIVFPQ, p->pq.nbits),
    FPX_RO ("pq_nbits", faiss::IndexPQ, p->pq.nbits),
    FPX_RO ("qtype", faiss::IndexScalarQuantizer, p->sq.qtype),
    FPX_RO ("qtype", faiss::IndexIVFScalarQuantizer, p->sq.qtype),
    FPX_RO ("nbits", faiss::IndexLSH, p->nbits),
    FPX_RO ("rotate_data", faiss::IndexLSH, p->rotate_data),
    FPX_RO ("train_thresholds", faiss::IndexLSH, p->train_thresholds),
    FPX_RO ("successive_ids", faiss::IndexShards, p->successive_ids),
    FPX_RO ("chain_size", faiss::IndexPreTransform, p->chain.size ()),
    FPX_RW ("k_factor", faiss::IndexRefine, k_factor, float, S_ATTR | S_SPACE, 1, 1e6),
    //  HNSW.
    FPX_RO ("M", faiss::IndexHNSW, p->hnsw.nb_neighbors (1)),
    FPX_RO ("max_level", faiss::IndexHNSW, p->hnsw.max_level),
    FPX_RO ("entry_point", faiss::IndexHNSW, p->hnsw.entry_point),
    FPX_RW ("efSearch", faiss::IndexHNSW, hnsw.efSearch, int, S_ATTR | S_SPACE, 1, S_COUNT_MAX),
    FPX_RW ("efConstruction", faiss::IndexHNSW, hnsw.efConstruction, int, S_ATTR | S_SPACE, 1, S_COUNT_MAX),
    FPX_RW ("check_relative_distance", faiss::IndexHNSW, hnsw.check_relative_distance, bool, S_ATTR, 0, 1),
    FPX_RW ("search_bounded_queue", faiss::IndexHNSW, hnsw.search_bounded_queue, bool, S_ATTR, 0, 1),
    //  Transforms.
    FPX_RO ("d_in", faiss::VectorTransform, p->d_in),
    FPX_RO ("d_out", faiss::VectorTransform, p->d_out),
    FPX_RO ("is_trained", faiss::VectorTransform, p->is_trained),
    FPX_RO ("have_bias", faiss::LinearTransform, p->have_bias),
    FPX_RO ("is_orthonormal", faiss::LinearTransform, p->is_orthonormal),
    FPX_RO ("M", faiss::OPQMatrix, p->M),
    FPX_RO ("norm", faiss::NormalizationTransform, p->norm),
    FPX_RW ("eigen_power", faiss::PCAMatrix, eigen_power, float, S_ATTR, -1e3, 1e3),
    FPX_RW ("epsilon", faiss::PCAMatrix, epsilon, float, S_ATTR, 0, 1),
    FPX_RW ("random_rotation", faiss::PCAMatrix, random_rotation, bool, S_ATTR, 0, 1),
    FPX_RW ("balanced_bins", faiss::PCAMatrix, balanced_bins, int, S_ATTR, 0, 65536),
    FPX_RW ("niter", faiss::OPQMatrix, niter, int, S_ATTR, 1, 10000),
    FPX_RW ("niter_pq", faiss::OPQMatrix, niter_pq, int, S_ATTR, 1, 10000),
    FPX_RW ("niter_pq_0", faiss::OPQMatrix, niter_pq_0, int, S_ATTR, 1, 10000),
    //  ParameterSpace only.
    FPX_SPACE ("ht", 0, 65536), FPX_SPACE ("k_factor_rf", 1, 1e6), FPX_SPACE ("verbose", 0, 0),
};
#undef FPX_RO
#undef FPX_RW
#undef FPX_SPACE

const Attr *
find_bounds (const char *name, int where)
{
    for (const Attr &candidate : s_attrs)
        if ((candidate.where & where) && strcmp (candidate.name, name) == 0)
            return &candidate;
    return nullptr;
}

//  Reads (get) or writes (set) attr on object; false if no row of that
//  name applies to the object's class (or, to set, none is writable).
bool
object_attr (const Object &object, const char *name, double *get, const double *set)
{
    for (const Attr &row : s_attrs) {
        if (strcmp (row.name, name) != 0)
            continue;
        if (set ? row.set && row.set (object, *set) : row.get && row.get (object, get))
            return true;
    }
    return false;
}

}   // namespace

extern "C" int
fpx_shim_construct (const char *type, int nargs, const double *args,
                    int nrefs, FaissIndex *const *ref_indexes,
                    FaissVectorTransform *const *ref_transforms,
                    FaissIndex **index_p, FaissVectorTransform **transform_p,
                    char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        Args a { nargs, args, type };
        Refs refs { nrefs, ref_indexes, ref_transforms, type };
        for (int i = 0; i < nrefs; i++)
            if (ref_indexes [i] && empty_group (as_index (ref_indexes [i])))
                bad (std::string (type) + ": a group without parts cannot be part of an index");
        AllocCap cap ((size_t) 1 << 30);
        faiss::Index *index = construct_index (type, a, refs);
        faiss::VectorTransform *transform = index ? nullptr : construct_transform (type, a, refs);
        if (!index && !transform)
            bad (std::string ("unknown class '") + type + "'");
        *index_p = reinterpret_cast<FaissIndex *> (index);
        *transform_p = reinterpret_cast<FaissVectorTransform *> (transform);
        return 0;
    });
}

extern "C" int
fpx_shim_attach (FaissIndex *composite, const char *role, FaissIndex *part,
                 FaissVectorTransform *transform, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *top = as_mutable (composite);
        std::string r = role;
        if (r == "prepend_transform") {
            auto pt = dynamic_cast<faiss::IndexPreTransform *> (top);
            if (!pt)
                bad ("prepend_transform: the index is not an IndexPreTransform");
            if (!transform)
                bad ("prepend_transform: the object is not a vector transform");
            faiss::VectorTransform *vt = as_transform (transform);
            //  Requests are checked against the index's d before they wait
            //  for its lock: the dimension of a live index never changes.
            if (vt->d_in != pt->d || vt->d_out != pt->d)
                bad ("prepend_transform: the transform must map " + std::to_string (pt->d)
                     + " dimensions to " + std::to_string (pt->d) + " (faissproxyd keeps an "
                     "index's dimension for its lifetime)");
            if (pt->chain.size () >= 16)
                bad ("prepend_transform: 16 transforms at most");
            pt->prepend_transform (vt);
            return 0;
        }
        faiss::ThreadedIndex<faiss::Index> *group = nullptr;
        if (r == "shard")
            group = dynamic_cast<faiss::IndexShards *> (top);
        else if (r == "replica")
            group = dynamic_cast<faiss::IndexReplicas *> (top);
        else
            bad ("unknown role '" + r + "' (shard, replica or prepend_transform)");
        if (!group)
            bad (r == "shard" ? "add_shard: the index is not an IndexShards"
                              : "add_replica: the index is not an IndexReplicas");
        if (!part)
            bad ("the object is not an index");
        if (empty_group (as_index (part)))
            bad ("a group without parts cannot be part of an index");
        faiss::Index *sub = as_mutable (part);
        //  FAISS checks these only after it has taken the index (and would
        //  then own it twice): check first.
        if (sub->d != group->d)
            bad ("dimension " + std::to_string (sub->d) + " differs from the group's "
                 + std::to_string (group->d));
        if (sub->metric_type != faiss::METRIC_L2 && sub->metric_type != faiss::METRIC_INNER_PRODUCT)
            bad ("shards and replicas merge L2 or inner-product results only");
        if (group->count () >= 64)
            bad ("64 parts at most");
        if (group->count () > 0) {
            const faiss::Index *first = group->at (0);
            if (sub->metric_type != first->metric_type || sub->is_trained != first->is_trained)
                bad ("the new part's metric or trained state differs from the first part's");
            if (r == "replica" && sub->ntotal != first->ntotal)
                bad ("a new replica must hold as many vectors as the others ("
                     + std::to_string (first->ntotal) + ")");
        }
        //  FAISS takes the part before its last checks (the parts' states,
        //  which a write through a part's alias may have changed): if one
        //  throws, hand the part back (not owned meanwhile, so not freed).
        int before = group->count ();
        group->own_fields = false;
        try {
            group->addIndex (sub);
        }
        catch (...) {
            try {
                if (group->count () > before)
                    group->removeIndex (sub);
            }
            catch (...) {               //  its sync throws again, after the part is out
            }
            group->own_fields = group->count () > 0;
            throw;
        }
        group->own_fields = true;
        return 0;
    });
}

namespace {

//  Whether sa_decode may be given any bytes as codes of index: the
//  kinds whose decoders read only bounded table entries, and IVF codes
//  whose list numbers are all below nlist (FAISS's decode_listno checks
//  and throws; the decoder then reconstructs that list's centroid).
void
check_decodable (const faiss::Index *index, int64_t n, const uint8_t *codes)
{
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
        index = pt->index;
    if (!index->is_trained)
        bad ("sa_decode: the index is not trained");
    if (dynamic_cast<const faiss::IndexIVFPQR *> (index))
        bad ("sa_decode is not served for IndexIVFPQR");
    auto ivf = dynamic_cast<const faiss::IndexIVF *> (index);
    if (ivf && (dynamic_cast<const faiss::IndexIVFFlat *> (ivf)
                || dynamic_cast<const faiss::IndexIVFPQ *> (ivf)
                || dynamic_cast<const faiss::IndexIVFScalarQuantizer *> (ivf))
            && !dynamic_cast<const faiss::IndexIVFFlatDedup *> (ivf)) {
        size_t code_size = ivf->sa_code_size ();
        for (int64_t i = 0; i < n; i++) {
            faiss::Index::idx_t list = ivf->decode_listno (codes + (size_t) i * code_size);
            if (list < 0 || (size_t) list >= ivf->nlist)
                bad ("sa_decode: code " + std::to_string (i) + " names list "
                     + std::to_string (list) + " of " + std::to_string (ivf->nlist));
        }
        return;
    }
    if (!ivf && (dynamic_cast<const faiss::IndexFlat *> (index)
                 || dynamic_cast<const faiss::IndexPQ *> (index)
                 || dynamic_cast<const faiss::IndexScalarQuantizer *> (index)
                 || dynamic_cast<const faiss::IndexLSH *> (index)))
        return;
    bad ("sa_decode is served for Flat, PQ, SQ, LSH and IVF Flat / PQ / SQ indexes (under "
         "PreTransforms): their codes are checked or harmless");
}

}   // namespace

extern "C" int
fpx_shim_merge_from (FaissIndex *target_c, FaissIndex *other_c, int64_t add_id,
                     char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *target = as_mutable (target_c), *other = as_mutable (other_c);
        if (add_id < 0)
            bad ("merge_from: add_id must be 0 or more");
        auto ivf = dynamic_cast<faiss::IndexIVF *> (target);
        if (!ivf) {
            if (!dynamic_cast<faiss::IndexFlatCodes *> (target))
                bad ("merge_from is served for flat-code (Flat, PQ, SQ, LSH) and IVF indexes");
            target->merge_from (*other, add_id);    //  checks, then one resize, then copies
            return 0;
        }
        ivf->check_compatible_for_merge (*other);
        auto from = static_cast<faiss::IndexIVF *> (other);
        auto to_lists = dynamic_cast<faiss::ArrayInvertedLists *> (ivf->invlists);
        auto from_lists = dynamic_cast<faiss::ArrayInvertedLists *> (from->invlists);
        if (!to_lists || !from_lists || dynamic_cast<faiss::IndexIVFPQR *> (ivf))
            bad ("merge_from is served for IVF indexes with in-memory lists");
        //  FAISS's InvertedLists::merge_from moves list by list in an
        //  OpenMP loop (an exception there ends the process) and adds
        //  add_id unchecked: here the ids are checked, all room reserved,
        //  then the lists moved on this thread without allocating.
        for (size_t l = 0; l < ivf->nlist; l++)
            for (faiss::Index::idx_t id : from_lists->ids [l])
                if (id > INT64_MAX - add_id)
                    bad ("merge_from: id " + std::to_string (id) + " + add_id overflows");
        for (size_t l = 0; l < ivf->nlist; l++) {
            to_lists->ids [l].reserve (to_lists->ids [l].size () + from_lists->ids [l].size ());
            to_lists->codes [l].reserve (to_lists->codes [l].size ()
                                         + from_lists->codes [l].size ());
        }
        for (size_t l = 0; l < ivf->nlist; l++) {
            for (faiss::Index::idx_t id : from_lists->ids [l])
                to_lists->ids [l].push_back (id + add_id);
            to_lists->codes [l].insert (to_lists->codes [l].end (), from_lists->codes [l].begin (),
                                        from_lists->codes [l].end ());
            from_lists->ids [l].clear ();
            from_lists->codes [l].clear ();
        }
        ivf->ntotal += from->ntotal;
        from->ntotal = 0;
        return 0;
    });
}

extern "C" int
fpx_shim_sa_code_size (const FaissIndex *index, size_t *size_p, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        *size_p = as_index (index)->sa_code_size ();
        return 0;
    });
}

extern "C" int
fpx_shim_sa_encode (const FaissIndex *index, int64_t n, const float *x, uint8_t *codes,
                    char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        if (!as_index (index)->is_trained)
            bad ("sa_encode: the index is not trained");
        check_refine_parts (as_index (index));
        as_index (index)->sa_encode (n, x, codes);
        return 0;
    });
}

extern "C" int
fpx_shim_sa_decode (const FaissIndex *index, int64_t n, const uint8_t *codes, float *x,
                    char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        check_decodable (as_index (index), n, codes);
        as_index (index)->sa_decode (n, codes, x);
        return 0;
    });
}

extern "C" int
fpx_shim_detach (FaissIndex *composite, const char *role, FaissIndex *part,
                 char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        std::string r = role;
        faiss::ThreadedIndex<faiss::Index> *group = nullptr;
        if (r == "remove_shard")
            group = dynamic_cast<faiss::IndexShards *> (as_mutable (composite));
        else if (r == "remove_replica")
            group = dynamic_cast<faiss::IndexReplicas *> (as_mutable (composite));
        else
            bad ("unknown role '" + r + "' (remove_shard or remove_replica)");
        if (!group)
            bad (r == "remove_shard" ? "remove_shard: the index is not an IndexShards"
                                     : "remove_replica: the index is not an IndexReplicas");
        //  The group owns its parts: not while one leaves, which FAISS
        //  would free. It throws (part not found) before changing anything.
        group->own_fields = false;
        try {
            group->removeIndex (as_mutable (part));
        }
        catch (...) {
            group->own_fields = group->count () > 0;
            throw;
        }
        group->own_fields = group->count () > 0;
        return 0;
    });
}

extern "C" void
fpx_shim_free_shell (FaissIndex *composite)
{
    faiss::Index *index = as_mutable (composite);
    if (auto ivf = dynamic_cast<faiss::IndexIVF *> (index))
        ivf->own_fields = false;
    else if (auto map = dynamic_cast<faiss::IndexIDMap *> (index))
        map->own_fields = false;
    else if (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index))
        pt->own_fields = false;
    else if (auto refine = dynamic_cast<faiss::IndexRefine *> (index)) {
        refine->own_fields = false;
        //  An IndexRefineFlat's refinement index is its own, not adopted.
        if (!dynamic_cast<faiss::IndexRefineFlat *> (index))
            refine->own_refine_index = false;
    }
    delete index;
}

extern "C" int
fpx_shim_subobject (const FaissIndex *index, const char *path,
                    FaissIndex **index_p, FaissVectorTransform **transform_p,
                    char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *top = as_mutable (const_cast<FaissIndex *> (index));
        std::string p = path;
        faiss::Index *sub = nullptr;
        faiss::VectorTransform *vt = nullptr;
        auto pt = dynamic_cast<faiss::IndexPreTransform *> (top);
        auto map = dynamic_cast<faiss::IndexIDMap *> (top);
        auto refine = dynamic_cast<faiss::IndexRefine *> (top);
        if (p == "quantizer" && dynamic_cast<faiss::IndexIVF *> (top))
            sub = dynamic_cast<faiss::IndexIVF *> (top)->quantizer;
        else if (p == "index" && (pt || map))
            sub = pt ? pt->index : map->index;
        else if (p == "base_index" && refine)
            sub = refine->base_index;
        else if (p == "refine_index" && refine)
            sub = refine->refine_index;
        else if (p == "ivf") {
            sub = find_ivf (top);
            if (!sub)
                bad ("index is not an IVF index and wraps none");
        }
        else if (p.rfind ("chain.", 0) == 0 && pt) {
            char *end;
            long i = strtol (p.c_str () + 6, &end, 10);
            if (*end || p.size () == 6 || i < 0 || i >= (long) pt->chain.size ())
                bad ("chain index out of range");
            vt = pt->chain [(size_t) i];
        }
        if (!sub && !vt)
            bad ("no sub-object '" + p + "' in this index");
        *index_p = reinterpret_cast<FaissIndex *> (sub);
        *transform_p = reinterpret_cast<FaissVectorTransform *> (vt);
        return 0;
    });
}

extern "C" const char *
fpx_shim_class_name (const FaissIndex *index_c, const FaissVectorTransform *transform_c)
{
#define FPX_CLASS(obj, name) if (dynamic_cast<const faiss::name *> (obj)) return #name;
    if (const faiss::Index *index = as_index (index_c)) {
        FPX_CLASS (index, IndexIDMap2) FPX_CLASS (index, IndexIDMap)
        FPX_CLASS (index, IndexIVFFlat) FPX_CLASS (index, IndexIVFPQ)
        FPX_CLASS (index, IndexIVFScalarQuantizer) FPX_CLASS (index, IndexIVF)
        FPX_CLASS (index, IndexHNSWFlat) FPX_CLASS (index, IndexHNSWSQ)
        FPX_CLASS (index, IndexHNSWPQ) FPX_CLASS (index, IndexHNSW)
        FPX_CLASS (index, IndexFlatL2) FPX_CLASS (index, IndexFlatIP) FPX_CLASS (index, IndexFlat)
        FPX_CLASS (index, IndexPQ) FPX_CLASS (index, IndexScalarQuantizer)
        FPX_CLASS (index, IndexLSH) FPX_CLASS (index, IndexPreTransform)
        FPX_CLASS (index, IndexRefineFlat) FPX_CLASS (index, IndexRefine)
        FPX_CLASS (index, IndexShards) FPX_CLASS (index, IndexReplicas)
        return "Index";
    }
    const faiss::VectorTransform *vt = as_transform (transform_c);
    FPX_CLASS (vt, PCAMatrix) FPX_CLASS (vt, OPQMatrix) FPX_CLASS (vt, RandomRotationMatrix)
    FPX_CLASS (vt, ITQTransform) FPX_CLASS (vt, NormalizationTransform)
    FPX_CLASS (vt, CenteringTransform) FPX_CLASS (vt, RemapDimensionsTransform)
    FPX_CLASS (vt, LinearTransform)
    return "VectorTransform";
#undef FPX_CLASS
}

/*  The part of index FAISS 1.7.3's Cloner cannot copy, or nullptr. The
    Cloner allocates a parent (IDMap, PreTransform, IVF, HNSW) before it
    copies the child, and throws on a type it does not know without freeing
    the parent: the same walk, done first, refuses those clones before
    anything is allocated. Mirrors faiss/clone_index.cpp.                */
static const char *
s_unclonable (const faiss::Index *index)
{
    using namespace faiss;
#define FPX_LEAF(name) if (dynamic_cast<const name *> (index)) return nullptr;
    FPX_LEAF (IndexPQ) FPX_LEAF (IndexLSH) FPX_LEAF (IndexFlat) FPX_LEAF (IndexLattice)
    FPX_LEAF (IndexResidualQuantizer) FPX_LEAF (IndexScalarQuantizer)
    FPX_LEAF (MultiIndexQuantizer) FPX_LEAF (ResidualCoarseQuantizer)
#undef FPX_LEAF
    if (auto *ivf = dynamic_cast<const IndexIVF *> (index)) {
        if (!dynamic_cast<const IndexIVFPQ *> (ivf) && !dynamic_cast<const IndexIVFFlat *> (ivf)
        &&  !dynamic_cast<const IndexIVFScalarQuantizer *> (ivf))
            return "this kind of IVF index";
        if (ivf->invlists && !dynamic_cast<const ArrayInvertedLists *> (ivf->invlists))
            return "these inverted lists";
        return s_unclonable (ivf->quantizer);
    }
    if (auto *pt = dynamic_cast<const IndexPreTransform *> (index)) {
        for (const VectorTransform *vt : pt->chain)
            if (!dynamic_cast<const RemapDimensionsTransform *> (vt)
            &&  !dynamic_cast<const LinearTransform *> (vt))
                return "a vector transform that is neither linear nor a dimension remap";
        return s_unclonable (pt->index);
    }
    if (auto *idmap = dynamic_cast<const IndexIDMap *> (index))
        return s_unclonable (idmap->index);
    if (auto *hnsw = dynamic_cast<const IndexHNSW *> (index))
        return s_unclonable (hnsw->storage);
    if (auto *nsg = dynamic_cast<const IndexNSG *> (index))
        return nsg->nsg.final_graph ? s_unclonable (nsg->storage) : "an NSG graph not built yet";
    if (auto *nnd = dynamic_cast<const IndexNNDescent *> (index))
        return s_unclonable (nnd->storage);
    if (auto *two = dynamic_cast<const Index2Layer *> (index))
        return s_unclonable (two->q1.quantizer);
    return "this kind of index";
}

extern "C" int
fpx_shim_clone (const FaissIndex *index_c, FaissIndex **clone_p, char *err, size_t err_size)
{
    const faiss::Index *index = as_index (index_c);
    const char *part = index ? s_unclonable (index) : "not an index";
    if (part) {
        snprintf (err, err_size, "FAISS cannot clone this %s: it holds %s",
                  fpx_shim_class_name (index_c, nullptr), part);
        return FPX_EINVAL;
    }
    return guarded (err, err_size, [&] () -> int {
        *clone_p = reinterpret_cast<FaissIndex *> (faiss::clone_index (index));
        return 0;
    });
}

extern "C" int
fpx_shim_get_attr (const FaissIndex *index, const FaissVectorTransform *transform,
                   const char *attr, double *value, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        Object object { index ? as_mutable (const_cast<FaissIndex *> (index)) : nullptr,
                        index ? nullptr : as_transform (const_cast<FaissVectorTransform *> (transform)) };
        bool found = object_attr (object, attr, value, nullptr);
        if (!found)
            bad (std::string ("no attribute '") + attr + "' on this object");
        return 0;
    });
}

extern "C" int
fpx_shim_set_attr (FaissIndex *index, FaissVectorTransform *transform,
                   const char *attr, double value, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        const Attr *spec = find_bounds (attr, S_ATTR);
        if (!spec)
            bad (std::string ("attribute '") + attr + "' cannot be set");
        if (!(value >= spec->lo && value <= spec->hi))
            bad (std::string ("value of '") + attr + "' out of range");
        Object object { index ? as_mutable (index) : nullptr,
                        index ? nullptr : as_transform (transform) };
        bool found = object_attr (object, attr, nullptr, &value);
        if (!found)
            bad (std::string ("no attribute '") + attr + "' on this object");
        return 0;
    });
}

extern "C" int
fpx_shim_transform_train (FaissVectorTransform *transform, int64_t n, const float *x,
                          char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        as_transform (transform)->train (n, x);
        return 0;
    });
}

extern "C" int
fpx_shim_transform_apply (const FaissVectorTransform *transform, int reverse,
                          int64_t n, const float *x, float *out, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        const faiss::VectorTransform *vt = as_transform (transform);
        if (!vt->is_trained)
            bad ("the transform is not trained");
        if (reverse)
            vt->reverse_transform (n, x, out);
        else
            vt->apply_noalloc (n, x, out);
        return 0;
    });
}

extern "C" int
fpx_shim_set_direct_map (FaissIndex *index, int type, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        auto ivf = dynamic_cast<faiss::IndexIVF *> (as_mutable (index));
        if (!ivf)
            bad ("direct maps exist only on IVF indexes");
        if (type < 0 || type > 2)
            bad ("direct map type is 0 (none), 1 (array) or 2 (hashtable)");
        ivf->set_direct_map_type ((faiss::DirectMap::Type) type);
        return 0;
    });
}

extern "C" int
fpx_shim_id_map (const FaissIndex *index, const int64_t **ids, size_t *n,
                 char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        auto map = dynamic_cast<const faiss::IndexIDMap *> (as_index (index));
        if (!map)
            bad ("only IndexIDMap and IndexIDMap2 have an id map");
        *ids = map->id_map.data ();
        *n = map->id_map.size ();
        return 0;
    });
}

extern "C" int
fpx_shim_kmeans (int d, int k, int64_t n, const float *x, const fpx_shim_kmeans_params_t *params,
                 float *centroids, double *stats, int *iterations, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        faiss::ClusteringParameters cp;
        cp.niter = params->niter;
        cp.nredo = params->nredo;
        cp.seed = params->seed;
        cp.spherical = params->spherical;
        cp.int_centroids = params->int_centroids;
        cp.update_index = params->update_index;
        cp.min_points_per_centroid = params->min_points_per_centroid;
        cp.max_points_per_centroid = params->max_points_per_centroid;
        cp.verbose = false;
        faiss::Clustering clustering (d, k, cp);
        faiss::IndexFlat index (d, (faiss::MetricType) params->metric);
        clustering.train (n, x, index);
        std::memcpy (centroids, clustering.centroids.data (), sizeof (float) * (size_t) k * d);
        size_t count = clustering.iteration_stats.size ();
        for (size_t i = 0; i < count && i < (size_t) params->niter * params->nredo; i++) {
            const faiss::ClusteringIterationStats &st = clustering.iteration_stats [i];
            double row [5] = { st.obj, st.time, st.time_search, st.imbalance_factor, (double) st.nsplit };
            std::memcpy (stats + 5 * i, row, sizeof row);
        }
        *iterations = (int) count;
        return 0;
    });
}

extern "C" int
fpx_shim_check_parameters (const char *text, char *out, size_t out_size,
                           char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        //  Tokens as ParameterSpace::set_index_parameters splits them.
        std::string rebuilt, all (text);
        size_t at = 0;
        while ((at = all.find_first_not_of (" ,", at)) != std::string::npos) {
            size_t end = all.find_first_of (" ,", at);
            std::string token = all.substr (at, end == std::string::npos ? std::string::npos : end - at);
            at = end == std::string::npos ? all.size () : end;
            size_t eq = token.find ('=');
            std::string name = token.substr (0, eq);
            std::string base = name;
            while (base.rfind ("quantizer_", 0) == 0)
                base = base.substr (10);
            const Attr *spec = eq == std::string::npos ? nullptr : find_bounds (base.c_str (), S_SPACE);
            if (!spec) {
                //  A name ParameterSpace does not know: passed on for its
                //  own refusal (it sets nothing then).
                rebuilt += (rebuilt.empty () ? "" : ",") + token;
                continue;
            }
            const char *value = token.c_str () + eq + 1;
            char *stop;
            double v = strtod (value, &stop);
            if (!*value || *stop || !std::isfinite (v))
                bad ("set_parameters: '" + name + "' needs a finite number, got '" + (value) + "'");
            if (!(v >= spec->lo && v <= spec->hi)) {
                char range [96];
                snprintf (range, sizeof range, "[%.15g, %.15g]", spec->lo, spec->hi);
                bad ("set_parameters: value of '" + name + "' out of range " + range);
            }
            char number [40];           //  the shortest text that reads back as v
            snprintf (number, sizeof number, "%.15g", v);
            if (strtod (number, nullptr) != v)
                snprintf (number, sizeof number, "%.17g", v);
            rebuilt += (rebuilt.empty () ? "" : ",") + name + "=" + number;
        }
        if (rebuilt.empty ())
            bad ("set_parameters: no parameter given");
        if (rebuilt.size () >= out_size)
            bad ("set_parameters: string too long");
        std::memcpy (out, rebuilt.c_str (), rebuilt.size () + 1);
        return 0;
    });
}
