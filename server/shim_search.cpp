/*  shim_search.cpp — search, range search, search_and_reconstruct,
    reconstruct and the batch rows of the shim (faiss_shim.h): the
    per-request parameters (Overrides), where a search goes (Target), and
    the tombstones a background removal leaves searches.
*/
#include "shim_internal.h"

using namespace fpx_shim_internal;

namespace {

//  A selection beside a background removal: the tombstones skip the
//  removed vectors, and the caller's selector sees each other position
//  as the label it will have in the rebuilt index (the labels the caller
//  gets back).
struct Filtered : faiss::IDSelector {
    const Tombstones *tomb;
    const faiss::IDSelector *user;
    Filtered (const Tombstones *tomb, const faiss::IDSelector *user) : tomb (tomb), user (user) {}
    bool is_member (faiss::Index::idx_t i) const override
    {
        if (!tomb->is_member (i))
            return false;
        return user->is_member (tomb->renumber.empty () ? i : tomb->renumbered (i));
    }
};

//  Per-request search parameters for an index tree. Owns what it builds.
//  A selection (select.h) puts its selector on the parameters of the
//  searched index itself (through PreTransforms), never on a coarse
//  quantizer's, as a caller of FAISS sets SearchParametersIVF::sel; an
//  index that takes no IVF or HNSW parameters gets a SearchParameters
//  (SearchParametersPQ for IndexPQ) carrying only it, and FAISS answers
//  as in process: it honours it, or refuses every parameter.
struct Overrides {
    int nprobe, efSearch;
    const faiss::IDSelector *sel = nullptr;
    int64_t max_codes = -1;
    bool nprobe_used = false, ef_used = false, max_codes_used = false;
    std::vector<std::unique_ptr<faiss::SearchParameters>> owned;
    //  FAISS 1.7.3's HNSW::search sizes its candidate queue from the
    //  index's own efSearch, not from SearchParametersHNSW: a per-request
    //  efSearch is set on the graph for the call and put back after, so
    //  the caller holds the index's lock exclusively (see ops.c).
    std::vector<std::pair<faiss::HNSW *, int>> saved_ef;

    const Tombstones *tomb = nullptr;           //  a background removal's: HNSW only
    bool tomb_used = false;
    std::vector<std::unique_ptr<faiss::IDSelector>> owned_sel;

    Overrides (int nprobe, int efSearch, const fpx_select_t *select = nullptr)
        : nprobe (nprobe), efSearch (efSearch), sel (fpx_select_selector (select)),
          max_codes (fpx_select_max_codes (select)) {}
    ~Overrides ()
    {
        for (auto &saved : saved_ef)
            saved.first->efSearch = saved.second;
    }

    bool any () const { return nprobe > 0 || efSearch > 0 || sel || tomb || max_codes >= 0; }

    //  Parameters for index, or nullptr where none apply. searched: index
    //  is the one searched (not a coarse quantizer), so it takes sel.
    const faiss::SearchParameters *build (const faiss::Index *index, bool searched = true)
    {
        faiss::IDSelector *own_sel = searched ? const_cast<faiss::IDSelector *> (sel) : nullptr;
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersPreTransform> ();
            p->index_params = const_cast<faiss::SearchParameters *> (build (pt->index, searched));
            return keep (std::move (p));
        }
        if (auto ivf = dynamic_cast<const faiss::IndexIVF *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersIVF> ();
            p->nprobe = nprobe > 0 ? (size_t) nprobe : ivf->nprobe;
            p->max_codes = max_codes >= 0 ? (size_t) max_codes : ivf->max_codes;
            p->sel = own_sel;
            nprobe_used |= nprobe > 0;
            max_codes_used |= max_codes >= 0;
            p->quantizer_params = const_cast<faiss::SearchParameters *> (
                build (ivf->quantizer, false));
            return keep (std::move (p));
        }
        if (auto hnsw = dynamic_cast<const faiss::IndexHNSW *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersHNSW> ();
            p->sel = own_sel;
            if (tomb && searched) {
                if (own_sel)
                    owned_sel.emplace_back (new Filtered (tomb, own_sel));
                p->sel = own_sel ? owned_sel.back ().get ()
                                 : const_cast<Tombstones *> (tomb);
                tomb_used = true;
            }
            p->efSearch = efSearch > 0 ? efSearch : hnsw->hnsw.efSearch;
            p->check_relative_distance = hnsw->hnsw.check_relative_distance;
            if (efSearch > 0) {
                auto graph = const_cast<faiss::HNSW *> (&hnsw->hnsw);
                saved_ef.emplace_back (graph, graph->efSearch);
                graph->efSearch = efSearch;
                ef_used = true;
            }
            return keep (std::move (p));
        }
        if (!own_sel)
            return nullptr;
        if (auto pq = dynamic_cast<const faiss::IndexPQ *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersPQ> ();
            p->search_type = pq->search_type;
            p->polysemous_ht = pq->polysemous_ht;
            p->sel = own_sel;
            return keep (std::move (p));
        }
        auto p = std::make_unique<faiss::SearchParameters> ();
        p->sel = own_sel;
        return keep (std::move (p));
    }

    const faiss::SearchParameters *keep (std::unique_ptr<faiss::SearchParameters> p)
    {
        owned.push_back (std::move (p));
        return owned.back ().get ();
    }

    //  FPX_EINVAL with a message if an override applied nowhere.
    int check (char *err, size_t err_size) const
    {
        if (nprobe > 0 && !nprobe_used) {
            snprintf (err, err_size, "nprobe does not apply to this index (no IVF part)");
            return FPX_EINVAL;
        }
        if (efSearch > 0 && !ef_used) {
            snprintf (err, err_size, "efSearch does not apply to this index (no HNSW part)");
            return FPX_EINVAL;
        }
        if (tomb && !tomb_used) {
            snprintf (err, err_size, "the index has vectors removed whose graph is being "
                      "rebuilt, but no HNSW part to filter them: retry later");
            return FPX_EBUSY;
        }
        if (max_codes >= 0 && !max_codes_used) {
            snprintf (err, err_size, "max_codes does not apply to this index (no IVF part)");
            return FPX_EINVAL;
        }
        return 0;
    }
};

//  The distance FAISS gives an empty result slot (with label -1): the
//  worst value of the metric's heap (CMax / CMin neutral), as an
//  IndexFlat returns for k > ntotal.
float
neutral_distance (const faiss::Index *index)
{
    return index->metric_type == faiss::METRIC_INNER_PRODUCT ? -FLT_MAX : FLT_MAX;
}

//  Where a search goes and how its labels come back. Outputs are
//  pre-filled with FAISS's empty slot (label -1, the neutral distance)
//  before FAISS runs, since some paths leave slots unwritten. An IndexIDMap is
//  always searched through the wrapped index with its labels mapped
//  here: IndexIDMap refuses SearchParameters in 1.7.3, and its own
//  mapping reads id_map [label] for whatever label the wrapped index
//  left (uninitialised slots of an empty index, NaN distances). Here
//  every label is checked against id_map's size first; for an index
//  whose keys are positions, against ntotal. A label out of range
//  becomes -1 with the neutral distance: nothing FAISS did not mean
//  leaves the server.
struct Target {
    const faiss::Index *index;
    const std::vector<faiss::Index::idx_t> *id_map = nullptr;
    int64_t positions = -1;         //  ntotal when keys are positions
    const Tombstones *renumber = nullptr;   //  positions, tombstoned: renumbered
    float neutral;

    explicit Target (const faiss::Index *top) : index (top), neutral (neutral_distance (top))
    {
        if (auto idmap = dynamic_cast<const faiss::IndexIDMap *> (top)) {
            index = idmap->index;
            id_map = &idmap->id_map;
        }
        else if (fpx_shim_keys_are_positions (reinterpret_cast<const FaissIndex *> (top)))
            positions = top->ntotal;
    }

    //  Results FAISS will overwrite where it finds something.
    void prefill (float *D, faiss::Index::idx_t *labels, size_t count) const
    {
        for (size_t i = 0; i < count; i++) {
            D [i] = neutral;
            labels [i] = -1;
        }
    }

    void map_labels (float *D, faiss::Index::idx_t *labels, size_t count) const
    {
        int64_t limit = id_map ? (int64_t) id_map->size () : positions;
        if (limit < 0)
            return;
        for (size_t i = 0; i < count; i++) {
            faiss::Index::idx_t label = labels [i];
            if (label < 0 || label >= limit) {
                labels [i] = -1;
                if (label != -1)
                    D [i] = neutral;
            }
            else if (id_map)
                labels [i] = (*id_map) [(size_t) label];
            else if (renumber)
                labels [i] = renumber->renumbered (label);
        }
    }

    //  Nothing to find: range_search does not call FAISS. (A search
    //  does, on the pre-filled outputs: an empty IndexFlat returns
    //  without writing them, others write their own empty-slot values,
    //  as an IndexLSH's 2^31-1.)
    bool empty () const { return index->ntotal == 0 && index->is_trained; }
};

//  FAISS 1.7.3's IndexIDMap refuses every search parameter, and a
//  selector given to the wrapped index that Target searches would test
//  positions, not ids: a selection on an IDMap is FAISS's refusal.
void
check_selection (const Target &target, const fpx_select_t *select)
{
    if (target.id_map && fpx_select_selector (select))
        throw std::runtime_error ("search params not supported for this index "
                                  "(IndexIDMap, FAISS 1.7.3)");
}

}   // namespace

namespace {


//  A search, skipping tomb's vectors when tomb is set; renumber: labels
//  that are positions come back as the rebuilt index will number them
//  (else as positions of the index as it is, to reconstruct from). A
//  selection (select.h) names the labels the caller sees: with tomb, the
//  rebuilt index's (Filtered).
int
search_pending (const FaissIndex *index, const Tombstones *tomb, bool renumber, int64_t n,
                const float *x, int64_t k, int nprobe, int efSearch, const fpx_select_t *select,
                float *D, int64_t *I, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        if (empty_group (as_index (index)))
            bad ("the group has no parts yet (add_shard / add_replica)");
        check_refine_parts (as_index (index));
        Overrides overrides (nprobe, efSearch, select);
        overrides.tomb = tomb;
        Target target (as_index (index));
        check_selection (target, select);
        if (tomb && renumber && target.positions >= 0)
            target.renumber = tomb;
        const faiss::SearchParameters *params =
            overrides.any () ? overrides.build (target.index) : nullptr;
        if (int rc = overrides.check (err, err_size))
            return rc;
        size_t count = (size_t) n * (size_t) k;
        target.prefill (D, I, count);
        target.index->search (n, x, k, D, I, params);
        target.map_labels (D, I, count);
        return 0;
    });
}

}   // namespace

extern "C" int
fpx_shim_search (const FaissIndex *index, int64_t n, const float *x, int64_t k,
                 int nprobe, int efSearch, const fpx_select_t *select, float *D, int64_t *I,
                 char *err, size_t err_size)
{
    return search_pending (index, nullptr, false, n, x, k, nprobe, efSearch, select, D, I,
                           err, err_size);
}

extern "C" int
fpx_shim_search_pending (const FaissIndex *index, const fpx_shim_rebuild_t *pending,
                         int64_t n, const float *x, int64_t k, int nprobe, int efSearch,
                         const fpx_select_t *select, float *D, int64_t *I,
                         char *err, size_t err_size)
{
    return search_pending (index, pending ? tombstones_of (pending) : nullptr,
                           true, n, x, k, nprobe, efSearch, select, D, I, err, err_size);
}

extern "C" int
fpx_shim_search_and_reconstruct (const FaissIndex *index, int64_t n, const float *x,
                                 int64_t k, int nprobe, int efSearch,
                                 const fpx_select_t *select, float *D,
                                 int64_t *I, float *R, char *err, size_t err_size)
{
    return fpx_shim_search_and_reconstruct_pending (index, nullptr, n, x, k, nprobe, efSearch,
                                                    select, D, I, R, err, err_size);
}

extern "C" int
fpx_shim_search_and_reconstruct_pending (const FaissIndex *index,
                                         const fpx_shim_rebuild_t *pending, int64_t n,
                                         const float *x, int64_t k, int nprobe, int efSearch,
                                         const fpx_select_t *select, float *D, int64_t *I,
                                         float *R, char *err, size_t err_size)
{
    const faiss::Index *top = as_index (index), *inner = top;
    size_t count = (size_t) n * (size_t) k, d = (size_t) top->d;
    const Tombstones *tomb = pending ? tombstones_of (pending) : nullptr;
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (inner))
        inner = pt->index;
    if (!dynamic_cast<const faiss::IndexIVF *> (inner)) {
        //  Search (labels checked against the index), then reconstruct each
        //  label found, on this thread; positions renumbered after that.
        int rc = search_pending (index, tomb, false, n, x, k, nprobe, efSearch, select, D, I,
                                 err, err_size);
        if (rc)
            return rc;
        return guarded (err, err_size, [&] () -> int {
            for (size_t i = 0; i < count; i++) {
                if (I [i] < 0)
                    memset (R + i * d, 0xff, d * sizeof (float));
                else
                    top->reconstruct (I [i], R + i * d);
            }
            if (tomb && fpx_shim_keys_are_positions (index))
                for (size_t i = 0; i < count; i++)
                    if (I [i] >= 0)
                        I [i] = tomb->renumbered (I [i]);
            return 0;
        });
    }
    //  An IVF (under PreTransforms, which pass it on): FAISS's own, which
    //  reads (list, offset) pairs from its own search; the offsets come
    //  from the lists themselves, so are in range.
    return guarded (err, err_size, [&] () -> int {
        if (tomb)
            bad ("search_and_reconstruct: no HNSW part to filter removed vectors");
        check_refine_parts (top);
        Overrides overrides (nprobe, efSearch, select);
        const faiss::SearchParameters *params = overrides.any () ? overrides.build (top) : nullptr;
        if (int rc = overrides.check (err, err_size))
            return rc;
        for (size_t i = 0; i < count; i++) {
            D [i] = neutral_distance (top);
            I [i] = -1;
        }
        top->search_and_reconstruct (n, x, k, D, I, R, params);
        return 0;
    });
}

extern "C" int64_t
fpx_shim_batch_rows (const FaissIndex *index, int64_t n)
{
    const faiss::Index *top = as_index (index);
    if (auto map = dynamic_cast<const faiss::IndexIDMap *> (top))
        top = map->index;
    auto flat = dynamic_cast<const faiss::IndexFlat *> (top);
    if (!flat || dynamic_cast<const faiss::IndexFlat1D *> (top)
    ||  (flat->metric_type != faiss::METRIC_L2 && flat->metric_type != faiss::METRIC_INNER_PRODUCT))
        return n;
    int64_t threshold = faiss::distance_compute_blas_threshold;
    return n < threshold && n * 4 >= threshold ? threshold : n;
}

namespace {

//  Bytes one range-search result takes while FAISS builds it.
const size_t S_RANGE_ENTRY = sizeof (float) + sizeof (faiss::Index::idx_t);
const size_t S_RANGE_CHUNK_BYTES = (size_t) 64 << 20;

//  Query rows per FAISS call such that a call finding everything (rows ×
//  ntotal results) builds at most min (64 MiB, the reply limit); 1 when
//  one query alone can exceed that.
int64_t
range_chunk_rows (int64_t ntotal, size_t max_total)
{
    size_t bound = std::min (S_RANGE_CHUNK_BYTES, std::max (max_total, (size_t) 1) * S_RANGE_ENTRY);
    size_t worst_row = (size_t) std::max (ntotal, (int64_t) 1) * S_RANGE_ENTRY;
    return (int64_t) std::max (bound / worst_row, (size_t) 1);
}

}   // namespace

extern "C" int
fpx_shim_range_search (const FaissIndex *index, int64_t n, const float *x,
                       float radius, int nprobe, int efSearch, const fpx_select_t *select,
                       uint64_t **lims_p, float **D_p, int64_t **I_p,
                       size_t *total_p, size_t max_total,
                       char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        if (empty_group (as_index (index)))
            bad ("the group has no parts yet (add_shard / add_replica)");
        check_refine_parts (as_index (index));
        Overrides overrides (nprobe, efSearch, select);
        Target target (as_index (index));
        check_selection (target, select);
        const faiss::SearchParameters *params =
            overrides.any () ? overrides.build (target.index) : nullptr;
        if (int rc = overrides.check (err, err_size))
            return rc;
        //  Queries go to FAISS in chunks whose worst case is bounded, and
        //  the count is checked after each: a search over the limit stops
        //  there instead of building every result first.
        std::unique_ptr<uint64_t, decltype (&std::free)> lims (
            (uint64_t *) std::calloc ((size_t) n + 1, sizeof (uint64_t)), &std::free);
        if (!lims)
            throw std::bad_alloc ();
        std::vector<float> distances;
        std::vector<faiss::Index::idx_t> labels;
        int64_t rows = range_chunk_rows (target.index->ntotal, max_total);
        for (int64_t q0 = 0; q0 < n && !target.empty (); q0 += rows) {
            int64_t q1 = std::min (n, q0 + rows);
            faiss::RangeSearchResult result ((size_t) (q1 - q0));
            target.index->range_search (q1 - q0, x + (size_t) q0 * target.index->d, radius,
                                        &result, params);
            size_t found = result.lims [q1 - q0], before = distances.size ();
            if (before + found > max_total) {
                snprintf (err, err_size, "range search found over %zu results, the limit, in its "
                          "first %lld of %lld queries (use a smaller radius or fewer queries)",
                          max_total, (long long) q1, (long long) n);
                return FPX_ETOOBIG;
            }
            distances.insert (distances.end (), result.distances, result.distances + found);
            labels.insert (labels.end (), result.labels, result.labels + found);
            for (int64_t i = q0; i < q1; i++)
                lims.get () [i + 1] = before + result.lims [i - q0 + 1];
        }
        size_t total = distances.size ();
        float *D = (float *) std::malloc (total ? total * sizeof (float) : 1);
        int64_t *I = (int64_t *) std::malloc (total ? total * sizeof (int64_t) : 1);
        if (!D || !I) {
            std::free (D); std::free (I);
            throw std::bad_alloc ();
        }
        if (total) {
            std::memcpy (D, distances.data (), total * sizeof (float));
            std::memcpy (I, labels.data (), total * sizeof (int64_t));
        }
        target.map_labels (D, I, total);
        *lims_p = lims.release (); *D_p = D; *I_p = I; *total_p = total;
        return 0;
    });
}

extern "C" int
fpx_shim_keys_are_positions (const FaissIndex *index_c)
{
    const faiss::Index *index = as_index (index_c);
    while (true) {
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
            index = pt->index;
        else if (auto refine = dynamic_cast<const faiss::IndexRefine *> (index))
            index = refine->base_index;
        else if (auto shards = dynamic_cast<const faiss::IndexShards *> (index)) {
            //  Shard labels are shifted to positions only with successive_ids.
            if (!shards->successive_ids)
                return 0;
            for (int i = 0; i < shards->count (); i++)
                if (!fpx_shim_keys_are_positions (reinterpret_cast<const FaissIndex *> (shards->at (i))))
                    return 0;
            return 1;
        }
        else if (auto replicas = dynamic_cast<const faiss::IndexReplicas *> (index)) {
            for (int i = 0; i < replicas->count (); i++)
                if (!fpx_shim_keys_are_positions (reinterpret_cast<const FaissIndex *> (replicas->at (i))))
                    return 0;
            return 1;
        }
        else
            return !dynamic_cast<const faiss::IndexIDMap *> (index)
                && !dynamic_cast<const faiss::IndexIVF *> (index);
    }
}

//  Indexes whose reconstruct_n needs no OpenMP loop over reconstruct:
//  flat codes and IVF scan their storage, a PreTransform passes it on.
static bool
has_bulk_reconstruct (const faiss::Index *index)
{
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
        return has_bulk_reconstruct (pt->index);
    return dynamic_cast<const faiss::IndexFlatCodes *> (index)
        || dynamic_cast<const faiss::IndexIVF *> (index);
}

extern "C" int
fpx_shim_reconstruct_n (const FaissIndex *index_c, int64_t i0, int64_t n, float *out,
                        char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        const faiss::Index *index = as_index (index_c);
        check_refine_parts (index);
        if (n == 1)
            index->reconstruct (i0, out);       //  FAISS's own semantics and checks
        else if (has_bulk_reconstruct (index))
            index->reconstruct_n (i0, n, out);
        else
            for (int64_t i = 0; i < n; i++)
                index->reconstruct (i0 + i, out + i * index->d);
        return 0;
    });
}
