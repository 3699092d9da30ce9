/*  faiss_shim.cpp — C entry points missing from FAISS 1.7.3's C API; see
    faiss_shim.h for why each one exists. Keep this file small: anything
    the C API can do is done in C.

    It also replaces the global operator new/delete (malloc/free based) so
    that allocations can be capped per thread while FAISS builds an index
    from untrusted input: an absurd factory string or index file then
    throws std::bad_alloc, which is reported, instead of exhausting memory.
*/
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>
#include <stdexcept>
#include <typeinfo>
#include <vector>

#include <string>
#include <unordered_map>

#include <omp.h>

#include <faiss/Clustering.h>
#include <faiss/Index2Layer.h>
#include <faiss/IndexAdditiveQuantizer.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQR.h>
#include <faiss/IndexLSH.h>
#include <faiss/IndexLattice.h>
#include <faiss/IndexNNDescent.h>
#include <faiss/IndexNSG.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/IndexReplicas.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/IndexShards.h>
#include <faiss/VectorTransform.h>
#include <faiss/clone_index.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>
#include <faiss/utils/random.h>

#include "faiss_shim.h"
#include "fpx_protocol.h"
#include "log.h"
#include "select.h"
#include "upload_check.h"
#include "fpx_errors.h"

// ---- allocation cap ------------------------------------------------------

static thread_local size_t s_cap_left = 0;     //  bytes still allowed
static thread_local bool s_cap_on = false;

static void *
s_allocate (size_t size)
{
    if (s_cap_on) {
        if (size > s_cap_left)
            throw std::bad_alloc ();
        s_cap_left -= size;
    }
    void *ptr = std::malloc (size ? size : 1);
    if (!ptr)
        throw std::bad_alloc ();
    return ptr;
}

void *operator new (size_t size) { return s_allocate (size); }
void *operator new[] (size_t size) { return s_allocate (size); }
void *operator new (size_t size, const std::nothrow_t &) noexcept
{
    try { return s_allocate (size); } catch (...) { return nullptr; }
}
void *operator new[] (size_t size, const std::nothrow_t &) noexcept
{
    try { return s_allocate (size); } catch (...) { return nullptr; }
}
void operator delete (void *ptr) noexcept { std::free (ptr); }
void operator delete[] (void *ptr) noexcept { std::free (ptr); }
void operator delete (void *ptr, size_t) noexcept { std::free (ptr); }
void operator delete[] (void *ptr, size_t) noexcept { std::free (ptr); }
void operator delete (void *ptr, const std::nothrow_t &) noexcept { std::free (ptr); }
void operator delete[] (void *ptr, const std::nothrow_t &) noexcept { std::free (ptr); }

namespace {

struct AllocCap {
    explicit AllocCap (size_t cap) { s_cap_left = cap; s_cap_on = true; }
    ~AllocCap () { s_cap_on = false; }
};

//  A request argument that is out of range: FPX_EINVAL, never FAISS.
struct BadArgument {
    std::string message;
};

[[noreturn]] void
bad (const std::string &message)
{
    throw BadArgument { message };
}

//  Runs fn, turning every exception into a code and a message.
template <typename Fn>
int guarded (char *err, size_t err_size, Fn fn)
{
    try {
        return fn ();
    }
    catch (const BadArgument &e) {
        s_cap_on = false;
        snprintf (err, err_size, "%s", e.message.c_str ());
        return FPX_EINVAL;
    }
    catch (const std::bad_alloc &) {
        s_cap_on = false;
        snprintf (err, err_size, "out of memory (or over the allocation cap)");
        return FPX_ENOMEM;
    }
    catch (const std::exception &e) {
        s_cap_on = false;
        snprintf (err, err_size, "%s", e.what ());
        return FPX_EFAISS;
    }
    catch (...) {
        s_cap_on = false;
        snprintf (err, err_size, "unknown FAISS exception");
        return FPX_EFAISS;
    }
}

//  The vectors a background removal (fpx_shim_remove_begin) took out
//  while their graph is rebuilt: searches skip them (FAISS 1.7.3's HNSW
//  honours SearchParameters::sel), and where keys are positions the
//  labels are renumbered as the rebuilt index will number them.
//  Positions past the removal's (vectors added since) are all kept.
struct Tombstones : faiss::IDSelector {
    std::vector<uint8_t> keep;                      //  by storage position
    std::vector<faiss::Index::idx_t> renumber;      //  keys are positions: new label
    std::vector<faiss::Index::idx_t> kept;          //  … and the position of each
    size_t removed = 0;
    bool is_member (faiss::Index::idx_t i) const override
    {
        return i >= 0 && ((size_t) i >= keep.size () || keep [(size_t) i]);
    }
    //  The label position i will have in the rebuilt index (i kept).
    faiss::Index::idx_t renumbered (faiss::Index::idx_t i) const
    {
        return (size_t) i < renumber.size () ? renumber [(size_t) i]
                                             : i - (faiss::Index::idx_t) removed;
    }
    //  The position now of what will be position k (k >= 0).
    faiss::Index::idx_t original (faiss::Index::idx_t k) const
    {
        return (size_t) k < kept.size () ? kept [(size_t) k] : k + (faiss::Index::idx_t) removed;
    }
};

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

//  An IOReader over a caller's buffer.
struct SpanReader : faiss::IOReader {
    const uint8_t *data;
    size_t size, pos = 0;
    SpanReader (const uint8_t *data, size_t size) : data (data), size (size) {}
    size_t operator() (void *ptr, size_t item_size, size_t nitems) override
    {
        if (item_size == 0 || nitems == 0)
            return 0;
        size_t avail = (size - pos) / item_size;
        if (nitems > avail)
            nitems = avail;
        std::memcpy (ptr, data + pos, item_size * nitems);
        pos += item_size * nitems;
        return nitems;
    }
};

//  An IOWriter into a fixed buffer, or only counting when buffer is null.
struct SpanWriter : faiss::IOWriter {
    uint8_t *data;
    size_t capacity, pos = 0;
    SpanWriter (uint8_t *data, size_t capacity) : data (data), capacity (capacity) {}
    size_t operator() (const void *ptr, size_t item_size, size_t nitems) override
    {
        size_t bytes = item_size * nitems;
        if (data && bytes) {
            if (bytes > capacity - pos)
                return 0;
            std::memcpy (data + pos, ptr, bytes);
        }
        pos += bytes;
        return nitems;
    }
};

//  An IOWriter handing every chunk to a C callback.
struct SinkWriter : faiss::IOWriter {
    int (*sink) (void *, const void *, size_t);
    void *arg;
    bool failed = false;
    size_t operator() (const void *ptr, size_t item_size, size_t nitems) override
    {
        if (failed || sink (arg, ptr, item_size * nitems))
            failed = true;
        return failed ? 0 : nitems;
    }
};

const faiss::Index *as_index (const FaissIndex *index)
{
    return reinterpret_cast<const faiss::Index *> (index);
}

//  An IndexShards or IndexReplicas without parts: FAISS's search writes
//  translations [0] of an empty vector there. Such a group is searched
//  nowhere (refused at the top, and never adopted: parts never leave).
bool
empty_group (const faiss::Index *index)
{
    if (auto shards = dynamic_cast<const faiss::IndexShards *> (index))
        return shards->count () == 0;
    if (auto replicas = dynamic_cast<const faiss::IndexReplicas *> (index))
        return replicas->count () == 0;
    return false;
}

//  An IndexRefine reads its refinement index at the base index's labels,
//  and reconstructs from it, without checking either against its size;
//  its parts stay reachable alone through their aliases (an add to the
//  base only, a reset of the refinement index). So before every search or
//  reconstruct: the parts of every Refine in the tree hold as many
//  vectors as the Refine itself.
void
check_refine_parts (const faiss::Index *index, int depth = 0)
{
    if (!index || depth > 16)
        return;
    if (auto refine = dynamic_cast<const faiss::IndexRefine *> (index)) {
        if (refine->base_index->ntotal != refine->ntotal
        ||  refine->refine_index->ntotal != refine->ntotal)
            bad ("IndexRefine holds " + std::to_string (refine->ntotal) + " vectors but its base "
                 "index " + std::to_string (refine->base_index->ntotal) + " and its refinement "
                 "index " + std::to_string (refine->refine_index->ntotal) + ": a part was "
                 "changed alone (add through the IndexRefine, or reset it)");
        check_refine_parts (refine->base_index, depth + 1);
    }
    else if (auto map = dynamic_cast<const faiss::IndexIDMap *> (index))
        check_refine_parts (map->index, depth + 1);
    else if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
        check_refine_parts (pt->index, depth + 1);
    else if (auto ivf = dynamic_cast<const faiss::IndexIVF *> (index))
        check_refine_parts (ivf->quantizer, depth + 1);
    else if (auto shards = dynamic_cast<const faiss::IndexShards *> (index)) {
        for (int i = 0; i < shards->count (); i++)
            check_refine_parts (shards->at (i), depth + 1);
    }
    else if (auto replicas = dynamic_cast<const faiss::IndexReplicas *> (index)) {
        for (int i = 0; i < replicas->count (); i++)
            check_refine_parts (replicas->at (i), depth + 1);
    }
}

//  The bytes write_index would write; for IndexShards and IndexReplicas,
//  which FAISS cannot write, the sum over their parts (what the memory
//  accounting needs: the parts are freed with them).
size_t
counted_bytes (const faiss::Index *index)
{
    const faiss::ThreadedIndex<faiss::Index> *group = dynamic_cast<const faiss::IndexShards *> (index);
    if (!group)
        group = dynamic_cast<const faiss::IndexReplicas *> (index);
    if (group) {
        size_t total = 0;
        for (int i = 0; i < group->count (); i++)
            total += counted_bytes (group->at (i));
        return total;
    }
    SpanWriter counter (nullptr, 0);
    faiss::write_index (index, &counter);
    return counter.pos;
}

}   // namespace

namespace {

const Tombstones *tombstones_of (const fpx_shim_rebuild_t *pending);

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
fpx_shim_serialize (const FaissIndex *index, int size_only,
                    uint8_t **bytes_p, size_t *size_p, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        if (size_only) {                    //  IndexShards / IndexReplicas: their parts' sizes
            *size_p = counted_bytes (as_index (index));
            return 0;
        }
        SpanWriter counter (nullptr, 0);
        faiss::write_index (as_index (index), &counter);
        *size_p = counter.pos;
        uint8_t *bytes = (uint8_t *) std::malloc (counter.pos ? counter.pos : 1);
        if (!bytes)
            throw std::bad_alloc ();
        SpanWriter writer (bytes, counter.pos);
        try {
            faiss::write_index (as_index (index), &writer);
        }
        catch (...) {
            std::free (bytes);
            throw;
        }
        *bytes_p = bytes;
        return 0;
    });
}

extern "C" int
fpx_shim_serialize_to (const FaissIndex *index, int (*sink) (void *, const void *, size_t),
                       void *arg, char *err, size_t err_size)
{
    SinkWriter writer;
    writer.sink = sink;
    writer.arg = arg;
    int rc = guarded (err, err_size, [&] () -> int {
        faiss::write_index (as_index (index), &writer);
        return 0;
    });
    if (writer.failed) {
        snprintf (err, err_size, "write failed");
        return FPX_EIO;
    }
    return rc;
}

extern "C" int
fpx_shim_deserialize (const uint8_t *bytes, size_t size, size_t alloc_cap,
                      FaissIndex **index_p, char *err, size_t err_size)
{
    //  The bytes are untrusted (upload_check.h): FAISS reads only what the
    //  allow-list walk accepted, and the object it builds is checked
    //  before anyone can use it.
    int rc = fpx_upload_check_bytes (bytes, size, err, err_size);
    if (rc)
        return rc;
    return guarded (err, err_size, [&] () -> int {
        SpanReader reader (bytes, size);
        std::unique_ptr<faiss::Index> index;
        {
            AllocCap cap (alloc_cap);
            index.reset (faiss::read_index (&reader, 0));
        }
        if (reader.pos != size)
            bad ("uploaded index: FAISS read " + std::to_string (reader.pos) + " of its "
                 + std::to_string (size) + " bytes");
        char why [512];
        if (fpx_upload_check_index (reinterpret_cast<FaissIndex *> (index.get ()), why, sizeof why))
            bad (why);
        *index_p = reinterpret_cast<FaissIndex *> (index.release ());
        return 0;
    });
}

extern "C" int
fpx_shim_factory (int d, const char *factory, int metric, size_t alloc_cap,
                  FaissIndex **index_p, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *index;
        {
            AllocCap cap (alloc_cap);
            index = faiss::index_factory (d, factory, (faiss::MetricType) metric);
        }
        if (int rc = fpx_upload_check_metrics (reinterpret_cast<FaissIndex *> (index), err, err_size)) {
            delete index;
            return rc;
        }
        *index_p = reinterpret_cast<FaissIndex *> (index);
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

#define FPX_STR_(x) #x
#define FPX_STR(x) FPX_STR_ (x)
extern "C" const char *
fpx_shim_faiss_version (void)
{
    return FPX_STR (FAISS_VERSION_MAJOR) "." FPX_STR (FAISS_VERSION_MINOR) "."
           FPX_STR (FAISS_VERSION_PATCH);
}

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

faiss::Index *as_mutable (FaissIndex *index) { return reinterpret_cast<faiss::Index *> (index); }
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

//  Reads attr from the matching part of an object; returns false if the
//  name does not apply. One table for get and set keeps them in step.
//  The bounds table below also bounds set_parameters (ParameterSpace).
enum { S_ATTR = 1, S_SPACE = 2 };
struct Attr {
    const char *name;
    int where;              //  S_ATTR: set_attr, S_SPACE: set_parameters
    double lo, hi;
};

bool
index_attr (faiss::Index *index, const std::string &name, double *get, const double *set)
{
#define FPX_FIELD(cond, obj, field, type)                                      \
    if ((cond) && name == #field) {                                            \
        if (set) (obj)->field = (type) *set; else *get = (double) (obj)->field; \
        return true;                                                           \
    }
    auto ivf = dynamic_cast<faiss::IndexIVF *> (index);
    auto hnsw = dynamic_cast<faiss::IndexHNSW *> (index);
    auto lsh = dynamic_cast<faiss::IndexLSH *> (index);
    auto refine = dynamic_cast<faiss::IndexRefine *> (index);
    auto ivfpq = dynamic_cast<faiss::IndexIVFPQ *> (index);
    auto pq = dynamic_cast<faiss::IndexPQ *> (index);
    if (!set) {
        FPX_FIELD (true, index, d, int)
        FPX_FIELD (true, index, ntotal, long)
        FPX_FIELD (true, index, is_trained, bool)
        FPX_FIELD (true, index, metric_type, faiss::MetricType)
        FPX_FIELD (true, index, metric_arg, float)
        FPX_FIELD (ivf, ivf, nlist, size_t)
        FPX_FIELD (ivf, ivf, code_size, size_t)
        FPX_FIELD (ivfpq, ivfpq, by_residual, bool)
        //  FAISS's check_ids_sorted (): each list's ids in ascending
        //  order, what IDSelectorRange's assume_sorted relies on.
        if (ivf && name == "ids_sorted") { *get = ivf->check_ids_sorted (); return true; }
        if (name == "sa_code_size") { *get = (double) index->sa_code_size (); return true; }
        FPX_FIELD (lsh, lsh, nbits, int)
        FPX_FIELD (lsh, lsh, rotate_data, bool)
        FPX_FIELD (lsh, lsh, train_thresholds, bool)
        if (hnsw && name == "M") { *get = hnsw->hnsw.nb_neighbors (1); return true; }
        if (hnsw && name == "max_level") { *get = hnsw->hnsw.max_level; return true; }
        if (hnsw && name == "entry_point") { *get = (double) hnsw->hnsw.entry_point; return true; }
        if ((ivfpq || pq) && name == "pq_M") { *get = (double) (ivfpq ? ivfpq->pq.M : pq->pq.M); return true; }
        if ((ivfpq || pq) && name == "pq_nbits") { *get = (double) (ivfpq ? ivfpq->pq.nbits : pq->pq.nbits); return true; }
        if (auto shards = dynamic_cast<faiss::IndexShards *> (index); shards && name == "successive_ids") {
            *get = shards->successive_ids;
            return true;
        }
        if (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index); pt && name == "chain_size") {
            *get = (double) pt->chain.size ();
            return true;
        }
        if (auto sq = dynamic_cast<faiss::IndexScalarQuantizer *> (index); sq && name == "qtype") {
            *get = sq->sq.qtype;
            return true;
        }
        if (auto sq = dynamic_cast<faiss::IndexIVFScalarQuantizer *> (index); sq && name == "qtype") {
            *get = sq->sq.qtype;
            return true;
        }
    }
    //  The k-means parameters an IVF index trains its quantizer with
    //  (FAISS's IndexIVF::cp), as "cp.<field>"; verbose only 0 (s_writable).
    if (ivf && name.compare (0, 3, "cp.") == 0) {
        faiss::ClusteringParameters &cp = ivf->cp;
        const std::string field = name.substr (3);
#define FPX_CP(f, type)                                                        \
        if (field == #f) {                                                     \
            if (set) cp.f = (type) *set; else *get = (double) cp.f;            \
            return true;                                                       \
        }
        FPX_CP (niter, int) FPX_CP (nredo, int) FPX_CP (seed, int)
        FPX_CP (min_points_per_centroid, int) FPX_CP (max_points_per_centroid, int)
        FPX_CP (spherical, bool) FPX_CP (int_centroids, bool) FPX_CP (update_index, bool)
        FPX_CP (verbose, bool) FPX_CP (decode_block_size, size_t)
#undef FPX_CP
        return false;
    }
    if (set && name == "metric_arg") {      //  read above with the other common fields
        index->metric_arg = (float) *set;
        return true;
    }
    FPX_FIELD (ivf, ivf, nprobe, size_t)
    FPX_FIELD (ivf, ivf, max_codes, size_t)
    FPX_FIELD (ivf, ivf, quantizer_trains_alone, char)
    FPX_FIELD (refine, refine, k_factor, float)
    //  IVF-SQ only: its codes keep their size either way; an IVF-PQ's
    //  precomputed tables depend on it (read-only there).
    if (auto ivfsq = dynamic_cast<faiss::IndexIVFScalarQuantizer *> (index)) {
        FPX_FIELD (true, ivfsq, by_residual, bool)
    }
    if (hnsw) {
        FPX_FIELD (true, (&hnsw->hnsw), efSearch, int)
        FPX_FIELD (true, (&hnsw->hnsw), efConstruction, int)
        FPX_FIELD (true, (&hnsw->hnsw), check_relative_distance, bool)
        FPX_FIELD (true, (&hnsw->hnsw), search_bounded_queue, bool)
    }
    return false;
}

bool
transform_attr (faiss::VectorTransform *vt, const std::string &name, double *get, const double *set)
{
    auto linear = dynamic_cast<faiss::LinearTransform *> (vt);
    auto pca = dynamic_cast<faiss::PCAMatrix *> (vt);
    auto opq = dynamic_cast<faiss::OPQMatrix *> (vt);
    auto norm = dynamic_cast<faiss::NormalizationTransform *> (vt);
    if (!set) {
        FPX_FIELD (true, vt, d_in, int)
        FPX_FIELD (true, vt, d_out, int)
        FPX_FIELD (true, vt, is_trained, bool)
        FPX_FIELD (linear, linear, have_bias, bool)
        FPX_FIELD (linear, linear, is_orthonormal, bool)
        FPX_FIELD (opq, opq, M, int)
        FPX_FIELD (norm, norm, norm, float)
    }
    FPX_FIELD (pca, pca, eigen_power, float)
    FPX_FIELD (pca, pca, epsilon, float)
    FPX_FIELD (pca, pca, random_rotation, bool)
    FPX_FIELD (pca, pca, balanced_bins, int)
    FPX_FIELD (opq, opq, niter, int)
    FPX_FIELD (opq, opq, niter_pq, int)
    FPX_FIELD (opq, opq, niter_pq_0, int)
    return false;
#undef FPX_FIELD
}

//  Bounds of every writable attribute and of every name FAISS's
//  ParameterSpace sets (verbose only as 0: FAISS's verbose output would
//  let a tenant write to the server's stdout on every call).
const Attr s_writable [] = {
    { "nprobe", S_ATTR | S_SPACE, 1, S_COUNT_MAX }, { "max_codes", S_ATTR | S_SPACE, 0, 1e15 },
    { "quantizer_trains_alone", S_ATTR, 0, 2 }, { "by_residual", S_ATTR, 0, 1 },
    { "k_factor", S_ATTR | S_SPACE, 1, 1e6 }, { "efSearch", S_ATTR | S_SPACE, 1, S_COUNT_MAX },
    { "efConstruction", S_ATTR | S_SPACE, 1, S_COUNT_MAX }, { "check_relative_distance", S_ATTR, 0, 1 },
    { "search_bounded_queue", S_ATTR, 0, 1 }, { "eigen_power", S_ATTR, -1e3, 1e3 },
    { "epsilon", S_ATTR, 0, 1 }, { "random_rotation", S_ATTR, 0, 1 }, { "balanced_bins", S_ATTR, 0, 65536 },
    { "niter", S_ATTR, 1, 10000 }, { "niter_pq", S_ATTR, 1, 10000 }, { "niter_pq_0", S_ATTR, 1, 10000 },
    { "metric_arg", S_ATTR, -FLT_MAX, FLT_MAX },
    { "cp.niter", S_ATTR, 1, 10000 }, { "cp.nredo", S_ATTR, 1, 100 },
    { "cp.seed", S_ATTR, INT32_MIN, INT32_MAX }, { "cp.min_points_per_centroid", S_ATTR, 0, INT32_MAX },
    { "cp.max_points_per_centroid", S_ATTR, 1, INT32_MAX }, { "cp.spherical", S_ATTR, 0, 1 },
    { "cp.int_centroids", S_ATTR, 0, 1 }, { "cp.update_index", S_ATTR, 0, 1 },
    { "cp.verbose", S_ATTR, 0, 0 }, { "cp.decode_block_size", S_ATTR, 1, 1 << 24 },
    { "ht", S_SPACE, 0, 65536 }, { "k_factor_rf", S_SPACE, 1, 1e6 }, { "verbose", S_SPACE, 0, 0 },
};

const Attr *
find_bounds (const char *name, int where)
{
    for (const Attr &candidate : s_writable)
        if ((candidate.where & where) && strcmp (candidate.name, name) == 0)
            return &candidate;
    return nullptr;
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
        bool found = index
            ? index_attr (as_mutable (const_cast<FaissIndex *> (index)), attr, value, nullptr)
            : transform_attr (as_transform (const_cast<FaissVectorTransform *> (transform)),
                              attr, value, nullptr);
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
        bool found = index ? index_attr (as_mutable (index), attr, nullptr, &value)
                           : transform_attr (as_transform (transform), attr, nullptr, &value);
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

namespace {

//  std::cerr's buffer in the server: each thread gathers its own line and
//  hands it to fpx_log (which sanitizes) at a newline or when it is long.
struct LogLineBuf : std::streambuf {
    static constexpr size_t S_LINE_MAX = 900;
    void put (char c)
    {
        thread_local std::string line;
        if (c != '\n')
            line += c;
        if ((c == '\n' || line.size () >= S_LINE_MAX) && !line.empty ()) {
            fpx_log_faiss (FPX_LOG_WARN, line.data (), line.size ());
            line.clear ();
        }
    }
    int overflow (int c) override
    {
        if (c != traits_type::eof ())
            put ((char) c);
        return traits_type::not_eof (c);
    }
    std::streamsize xsputn (const char *s, std::streamsize n) override
    {
        for (std::streamsize i = 0; i < n; i++)
            put (s [i]);
        return n;
    }
};

}

extern "C" void
fpx_shim_log_cerr (void)
{
    //  Never freed: std::cerr is flushed after static objects are gone.
    static LogLineBuf *buffer = new LogLineBuf ();
    std::cerr.rdbuf (buffer);
}

// ---- factory strings ---------------------------------------------------------------

namespace {

//  The scalar quantizer types index_factory names (FAISS 1.7.3).
const char *sq_name (faiss::ScalarQuantizer::QuantizerType qtype)
{
    switch (qtype) {
        case faiss::ScalarQuantizer::QT_8bit: return "SQ8";
        case faiss::ScalarQuantizer::QT_4bit: return "SQ4";
        case faiss::ScalarQuantizer::QT_6bit: return "SQ6";
        case faiss::ScalarQuantizer::QT_fp16: return "SQfp16";
        default: return nullptr;
    }
}

std::string pq_name (const faiss::ProductQuantizer &pq)
{
    std::string text = "PQ" + std::to_string (pq.M);
    if (pq.nbits != 8)
        text += "x" + std::to_string (pq.nbits);
    return text;
}

//  The factory string index_factory builds this structure from, or ""
//  when it builds none (or not exactly this one): the same classes with
//  the parameters factory strings set, and nothing else. (An OPQ
//  transform comes back from FAISS's format as a plain LinearTransform,
//  so "OPQ…" is never recovered.)
std::string factory_of (const faiss::Index *index)
{
    using namespace faiss;
    if (dynamic_cast<const IndexFlat *> (index) && (typeid (*index) == typeid (IndexFlat)
        || typeid (*index) == typeid (IndexFlatL2) || typeid (*index) == typeid (IndexFlatIP)))
        return "Flat";
    if (auto map = dynamic_cast<const IndexIDMap *> (index)) {
        std::string inner = factory_of (map->index);
        bool two = dynamic_cast<const IndexIDMap2 *> (index) != nullptr;
        return inner.empty () ? "" : (two ? "IDMap2," : "IDMap,") + inner;
    }
    if (auto pt = dynamic_cast<const IndexPreTransform *> (index)) {
        std::string text;
        for (const VectorTransform *vt : pt->chain) {
            if (auto pca = dynamic_cast<const PCAMatrix *> (vt)) {
                if (pca->eigen_power != 0 && pca->eigen_power != -0.5f)
                    return "";
                text += std::string ("PCA") + (pca->eigen_power ? "W" : "")
                      + (pca->random_rotation ? "R" : "") + std::to_string (pca->d_out) + ",";
            }
            else if (auto rr = dynamic_cast<const RandomRotationMatrix *> (vt))
                text += "RR" + std::to_string (rr->d_out) + ",";
            else if (auto norm = dynamic_cast<const NormalizationTransform *> (vt)) {
                if (norm->norm != 2)
                    return "";
                text += "L2norm,";
            }
            else
                return "";
        }
        std::string inner = factory_of (pt->index);
        return inner.empty () ? "" : text + inner;
    }
    if (auto ivf = dynamic_cast<const IndexIVF *> (index)) {
        std::string text = "IVF" + std::to_string (ivf->nlist);
        const Index *q = ivf->quantizer;
        if (auto hnsw = dynamic_cast<const IndexHNSWFlat *> (q))
            text += "_HNSW" + std::to_string (hnsw->hnsw.nb_neighbors (1));
        else if (factory_of (q) != "Flat")
            return "";
        if (typeid (*index) == typeid (IndexIVFFlat))
            return text + ",Flat";
        if (typeid (*index) == typeid (IndexIVFPQ)) {
            auto pq = static_cast<const IndexIVFPQ *> (index);
            return pq->by_residual ? text + "," + pq_name (pq->pq) : "";
        }
        if (typeid (*index) == typeid (IndexIVFScalarQuantizer)) {
            auto sq = static_cast<const IndexIVFScalarQuantizer *> (index);
            const char *name = sq_name (sq->sq.qtype);
            return name && sq->by_residual ? text + "," + name : "";
        }
        return "";
    }
    if (auto hnsw = dynamic_cast<const IndexHNSW *> (index)) {
        std::string text = "HNSW" + std::to_string (hnsw->hnsw.nb_neighbors (1));
        if (typeid (*index) == typeid (IndexHNSWFlat))
            return text;
        if (typeid (*index) == typeid (IndexHNSWSQ)) {
            auto sq = dynamic_cast<const IndexScalarQuantizer *> (hnsw->storage);
            const char *name = sq ? sq_name (sq->sq.qtype) : nullptr;
            return name ? text + "_" + name : "";
        }
        if (typeid (*index) == typeid (IndexHNSWPQ)) {
            auto pq = dynamic_cast<const IndexPQ *> (hnsw->storage);
            return pq && pq->pq.nbits == 8 ? text + "_PQ" + std::to_string (pq->pq.M) : "";
        }
        return "";
    }
    if (typeid (*index) == typeid (IndexPQ))
        return pq_name (static_cast<const IndexPQ *> (index)->pq);
    if (typeid (*index) == typeid (IndexScalarQuantizer)) {
        const char *name = sq_name (static_cast<const IndexScalarQuantizer *> (index)->sq.qtype);
        return name ? name : "";
    }
    if (auto lsh = dynamic_cast<const IndexLSH *> (index))
        return lsh->nbits == lsh->d && !lsh->rotate_data && !lsh->train_thresholds ? "LSH" : "";
    return "";
}

}  // namespace

extern "C" size_t
fpx_shim_factory_of (const FaissIndex *index, char *out, size_t out_size)
{
    out [0] = 0;
    try {
        std::string text = factory_of (as_index (index));
        if (text.size () >= out_size)
            return 0;
        memcpy (out, text.c_str (), text.size () + 1);
        return text.size ();
    }
    catch (...) {
        return 0;
    }
}

// ---- remove_ids, rebuilding where FAISS cannot remove ------------------
//
//  FAISS 1.7.3's HNSW indexes throw on remove_ids: a graph cannot lose a
//  node. Where an index stores its vectors in an IndexHNSW (bare, under
//  PreTransforms, under an IDMap / IDMap2), removal builds a new graph
//  from the vectors kept, in storage order, as FAISS would build it for
//  a new index fed those vectors (the same M, level probabilities,
//  efConstruction, efSearch; the level generator seeded as a new index's),
//  and swaps it in whole. The codes of the storage (IndexFlat,
//  IndexScalarQuantizer, IndexPQ, …) are copied, never re-encoded: a
//  vector does not drift however many removals it outlives. The graph is
//  built by inserting the codes' decodings (for IndexFlat, the vectors
//  themselves), on one thread: FAISS inserts a level's vectors in
//  parallel once there are more than 100, and the graph then depends on
//  the threads' timing, while a removal replayed from the log at recovery
//  must build the very graph it built the first time.

namespace {

//  The IndexHNSW that stores index's vectors (through PreTransforms), or
//  nullptr.
faiss::IndexHNSW *
stored_in_hnsw (faiss::Index *index)
{
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index))
        index = pt->index;
    return dynamic_cast<faiss::IndexHNSW *> (index);
}

//  An empty, trained copy of storage: its codes are moved out while FAISS
//  clones it (under the caller's exclusive lock), so nothing is copied.
std::unique_ptr<faiss::Index>
clone_empty (faiss::IndexFlatCodes *storage)
{
    std::vector<uint8_t> codes;
    codes.swap (storage->codes);
    faiss::Index::idx_t ntotal = storage->ntotal;
    storage->ntotal = 0;
    std::unique_ptr<faiss::Index> copy;
    try {
        copy.reset (faiss::clone_index (storage));
    }
    catch (...) {
        storage->codes.swap (codes);
        storage->ntotal = ntotal;
        throw;
    }
    storage->codes.swap (codes);
    storage->ntotal = ntotal;
    return copy;
}

//  A removal that rebuilds: keep[i] says whether storage position i
//  stays. prepare() builds everything aside (the index is untouched if
//  it throws); commit() swaps it in and cannot fail.
struct Rebuild {
    faiss::Index *top;                  //  the index the caller holds
    faiss::IndexIDMap *map = nullptr;   //  top, when it is an IDMap
    faiss::IndexHNSW *hnsw;
    faiss::IndexFlatCodes *storage = nullptr;
    std::vector<uint8_t> keep;
    size_t nkeep = 0;
    std::unique_ptr<faiss::IndexHNSW> fresh;
    std::vector<uint8_t> codes;         //  the codes kept, until build()
    std::vector<float> x;               //  their decodings, until build()
    std::vector<faiss::Index::idx_t> id_map;
    std::unordered_map<faiss::Index::idx_t, faiss::Index::idx_t> rev_map;

    Rebuild (faiss::Index *top, faiss::IndexHNSW *hnsw) : top (top), hnsw (hnsw) {}

    //  Which positions stay, and whether the storage can be rebuilt.
    void select (const faiss::IDSelector &sel)
    {
        storage = dynamic_cast<faiss::IndexFlatCodes *> (hnsw->storage);
        if (!storage || hnsw->reconstruct_from_neighbors)
            bad (std::string ("remove_ids cannot rebuild an HNSW index over ")
                 + (hnsw->storage ? fpx_shim_class_name (reinterpret_cast<const FaissIndex *>
                                                         (hnsw->storage), nullptr) : "no")
                 + " storage: only flat codes (Flat, SQ, PQ, LSH, 2-layer) can be rebuilt");
        size_t ntotal = (size_t) hnsw->ntotal;
        if (storage->ntotal != hnsw->ntotal
        ||  storage->codes.size () != ntotal * storage->code_size
        ||  (map && map->id_map.size () != ntotal))
            bad ("remove_ids: the index's parts disagree on how many vectors it holds");
        keep.resize (ntotal);
        for (size_t i = 0; i < ntotal; i++) {
            faiss::Index::idx_t key = map ? map->id_map [i] : (faiss::Index::idx_t) i;
            keep [i] = !sel.is_member (key);
            nkeep += keep [i];
        }
    }

    //  Bytes prepare() allocates, about: the codes kept twice (aside and
    //  in the new storage), their decodings, the new graph (as dense as
    //  the old one), FAISS's per-vector locks and visited table, and the
    //  new id map (and reverse map) of an IDMap.
    size_t need () const
    {
        size_t ntotal = keep.size ();
        double per_vector = 2.0 * (double) storage->code_size + 4.0 * (double) hnsw->d
                          + 4 + 8 + 8 + 1;
        if (ntotal)
            per_vector += 1.25 * 4.0 * (double) hnsw->hnsw.neighbors.size () / (double) ntotal;
        if (map)
            per_vector += dynamic_cast<faiss::IndexIDMap2 *> (map) ? 8 + 64 : 8;
        return (size_t) (per_vector * (double) nkeep) + ntotal + ((size_t) 1 << 20);
    }

    //  Everything that reads the index, under the caller's exclusive
    //  lock: the codes kept copied out and decoded, an empty clone of the
    //  storage, the new id maps. Then build() needs no lock.
    void gather ()
    {
        size_t code_size = storage->code_size;
        codes.resize (nkeep * code_size);
        for (size_t i = 0, j = 0; i < keep.size (); i++)
            if (keep [i])
                memcpy (&codes [code_size * j++], &storage->codes [code_size * i], code_size);
        x.resize (nkeep * (size_t) hnsw->d);
        if (nkeep)
            storage->sa_decode ((faiss::Index::idx_t) nkeep, codes.data (), x.data ());

        std::unique_ptr<faiss::Index> empty = clone_empty (storage);
        fresh.reset (new faiss::IndexHNSW (empty.get (), 32));
        fresh->own_fields = true;
        empty.release ();
        //  A new index's graph parameters, as the old graph had them.
        const faiss::HNSW &old = hnsw->hnsw;
        faiss::HNSW &graph = fresh->hnsw;
        graph.assign_probas = old.assign_probas;
        graph.cum_nneighbor_per_level = old.cum_nneighbor_per_level;
        graph.efConstruction = old.efConstruction;
        graph.efSearch = old.efSearch;
        graph.check_relative_distance = old.check_relative_distance;
        graph.upper_beam = old.upper_beam;
        graph.search_bounded_queue = old.search_bounded_queue;
        graph.rng = faiss::RandomGenerator (12345);     //  as faiss::HNSW's constructor
        fresh->metric_arg = hnsw->metric_arg;

        if (map) {
            id_map.reserve (nkeep);
            for (size_t i = 0; i < keep.size (); i++)
                if (keep [i])
                    id_map.push_back (map->id_map [i]);
            if (dynamic_cast<faiss::IndexIDMap2 *> (map)) {
                rev_map.reserve (nkeep);
                for (size_t j = 0; j < nkeep; j++)
                    rev_map [id_map [j]] = (faiss::Index::idx_t) j;
            }
        }
    }

    //  The new graph, from what gather() copied: touches nothing shared.
    void build ()
    {
        int threads = omp_get_max_threads ();
        omp_set_num_threads (1);
        try {
            fresh->add ((faiss::Index::idx_t) nkeep, x.data ());
        }
        catch (...) {
            omp_set_num_threads (threads);
            throw;
        }
        omp_set_num_threads (threads);
        std::vector<float> ().swap (x);
        auto built = dynamic_cast<faiss::IndexFlatCodes *> (fresh->storage);
        if (!built || built->codes.size () != codes.size ())
            bad ("remove_ids: the rebuilt storage does not hold the codes kept");
        built->codes.swap (codes);
        std::vector<uint8_t> ().swap (codes);
    }

    void prepare ()
    {
        gather ();
        build ();
    }

    void commit () noexcept
    {
        auto built = static_cast<faiss::IndexFlatCodes *> (fresh->storage);
        std::swap (hnsw->hnsw, fresh->hnsw);
        storage->codes.swap (built->codes);
        std::swap (storage->ntotal, built->ntotal);
        hnsw->ntotal = storage->ntotal;
        //  The PreTransforms between top (or the IDMap) and the HNSW index.
        faiss::Index *index = map ? map->index : top;
        while (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index)) {
            pt->ntotal = hnsw->ntotal;
            index = pt->index;
        }
        if (map) {
            map->id_map.swap (id_map);
            map->ntotal = hnsw->ntotal;
            if (auto map2 = dynamic_cast<faiss::IndexIDMap2 *> (map))
                map2->rev_map.swap (rev_map);
        }
    }
};

//  Selects, checks the memory against cap, builds and swaps in. 0 (with
//  *rebuilt = 0 when nothing was selected), or FPX_ENOMEM with *need set
//  and the index untouched.
int
run_rebuild (Rebuild &rebuild, const faiss::IDSelector &sel, size_t cap, size_t *removed,
             size_t *need, int *rebuilt, char *err, size_t err_size)
{
    rebuild.select (sel);
    if (rebuild.nkeep == rebuild.keep.size ())
        return 0;                   //  nothing to remove: nothing to build
    *need = rebuild.need ();
    if (*need > cap) {
        snprintf (err, err_size, "remove_ids rebuilds the HNSW graph of the %zu vectors "
                  "kept, which needs about %zu MiB, more than the %zu MiB allowed",
                  rebuild.nkeep, *need >> 20, cap >> 20);
        return FPX_ENOMEM;
    }
    rebuild.prepare ();
    rebuild.commit ();
    *removed = rebuild.keep.size () - rebuild.nkeep;
    *rebuilt = 1;
    return 0;
}

//  The positions keep[] drops, as a selector for FAISS's own compaction.
struct Dropped : faiss::IDSelector {
    const std::vector<uint8_t> &keep;
    explicit Dropped (const std::vector<uint8_t> &keep) : keep (keep) {}
    bool is_member (faiss::Index::idx_t i) const override
    {
        return i >= 0 && (size_t) i < keep.size () && !keep [(size_t) i];
    }
};

//  An IndexRefine, which FAISS 1.7.3 cannot remove from at all: its base
//  index and its refine index both keep vectors by position, and both
//  lose the same ones (the base rebuilt when it is an HNSW index). A base
//  that numbers vectors itself (IVF) would keep its old numbers while the
//  refine index renumbers: FAISS's refusal stands there.
int
remove_refined (faiss::IndexRefine *refine, const faiss::IDSelector &sel, size_t cap,
                size_t *removed, size_t *need, int *rebuilt, char *err, size_t err_size)
{
    auto exact = dynamic_cast<faiss::IndexFlatCodes *> (refine->refine_index);
    faiss::Index *base = refine->base_index, *inner = base;
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *> (inner))
        inner = pt->index;
    faiss::IndexHNSW *hnsw = dynamic_cast<faiss::IndexHNSW *> (inner);
    if (!exact || (!hnsw && !dynamic_cast<faiss::IndexFlatCodes *> (inner))) {
        *removed = refine->remove_ids (sel);
        return 0;
    }
    if (base->ntotal != refine->ntotal || exact->ntotal != refine->ntotal)
        bad ("remove_ids: the refine index and its base disagree on how many vectors they hold");
    if (!hnsw) {                    //  flat codes all the way: FAISS compacts both
        *removed = base->remove_ids (sel);
        exact->remove_ids (sel);
        refine->ntotal = base->ntotal;
        return 0;
    }
    Rebuild rebuild (base, hnsw);
    int rc = run_rebuild (rebuild, sel, cap, removed, need, rebuilt, err, err_size);
    if (rc || !*rebuilt)
        return rc;
    exact->remove_ids (Dropped (rebuild.keep));     //  compaction in place: no allocation
    refine->ntotal = base->ntotal;
    return 0;
}

//  The ids of a remove_ids request, sorted and deduplicated: 8 bytes an
//  id, where FAISS's IDSelectorBatch hashes them at several times that
//  (a 256 MiB frame of ids asked it for gigabytes).
struct SortedIds : faiss::IDSelector {
    std::vector<faiss::Index::idx_t> ids;
    bool is_member (faiss::Index::idx_t id) const override
    {
        return std::binary_search (ids.begin (), ids.end (), id);
    }
};

//  Whether index removes through an IVF hashtable direct map, which takes
//  only an IDSelectorArray (and reads its ids, never is_member).
bool
removes_by_hashtable (const faiss::Index *index)
{
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index))
        index = pt->index;
    auto ivf = dynamic_cast<const faiss::IndexIVF *> (index);
    return ivf && ivf->direct_map.type == faiss::DirectMap::Hashtable;
}

//  An IDMap over an IVF index (through PreTransforms). The IVF lists
//  number their vectors by position in the id map; FAISS 1.7.3's
//  IDMap::remove_ids compacts the id map but leaves the survivors' numbers
//  as they were, which then point past it. Here the lists are compacted
//  and renumbered in one pass, the positions moving down as the id map's
//  do. Everything that can fail (checks, allocations) comes first.
int
remove_mapped_ivf (faiss::IndexIDMap *map, faiss::IndexIVF *ivf, const faiss::IDSelector &sel,
                   size_t *removed)
{
    using idx_t = faiss::Index::idx_t;
    auto lists = dynamic_cast<faiss::ArrayInvertedLists *> (ivf->invlists);
    if (!lists)
        bad ("remove_ids on an IDMap over an IVF index needs its inverted lists in memory");
    if (ivf->direct_map.type != faiss::DirectMap::NoMap)
        bad ("remove_ids on an IDMap over an IVF index with a direct map: set_direct_map "
             "type 0 first");
    if (dynamic_cast<faiss::IndexIVFPQR *> (ivf) || dynamic_cast<faiss::IndexIVFFlatDedup *> (ivf))
        bad ("remove_ids on an IDMap over this IVF index is not supported: it keeps data "
             "by vector number outside its lists");
    size_t ntotal = map->id_map.size ();
    if ((size_t) ivf->ntotal != ntotal)
        bad ("remove_ids: the index's parts disagree on how many vectors it holds");
    for (size_t l = 0; l < lists->nlist; l++) {
        if (lists->codes [l].size () != lists->ids [l].size () * lists->code_size)
            bad ("remove_ids: an inverted list's codes and ids disagree");
        for (idx_t id : lists->ids [l])
            if (id < 0 || (size_t) id >= ntotal)
                bad ("remove_ids: an inverted list holds a vector number past the id map");
    }
    std::vector<idx_t> renumber (ntotal);
    std::vector<idx_t> id_map;
    size_t nkeep = 0;
    for (size_t i = 0; i < ntotal; i++)
        renumber [i] = sel.is_member (map->id_map [i]) ? -1 : (idx_t) nkeep++;
    if (nkeep == ntotal)
        return 0;
    id_map.reserve (nkeep);
    for (size_t i = 0; i < ntotal; i++)
        if (renumber [i] >= 0)
            id_map.push_back (map->id_map [i]);
    auto map2 = dynamic_cast<faiss::IndexIDMap2 *> (map);
    std::unordered_map<idx_t, idx_t> rev_map;
    if (map2) {
        rev_map.reserve (nkeep);
        for (size_t j = 0; j < nkeep; j++)
            rev_map [id_map [j]] = (idx_t) j;
    }
    size_t code_size = lists->code_size;
    for (size_t l = 0; l < lists->nlist; l++) {
        std::vector<idx_t> &ids = lists->ids [l];
        std::vector<uint8_t> &codes = lists->codes [l];
        size_t kept = 0;
        for (size_t k = 0; k < ids.size (); k++) {
            idx_t moved = renumber [(size_t) ids [k]];
            if (moved < 0)
                continue;
            ids [kept] = moved;
            if (kept != k)
                memmove (&codes [kept * code_size], &codes [k * code_size], code_size);
            kept++;
        }
        ids.resize (kept);                  //  shrinking: no allocation
        codes.resize (kept * code_size);
    }
    ivf->ntotal = (idx_t) nkeep;
    faiss::Index *index = map->index;
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *> (index)) {
        pt->ntotal = (idx_t) nkeep;
        index = pt->index;
    }
    map->id_map.swap (id_map);
    map->ntotal = (idx_t) nkeep;
    if (map2)
        map2->rev_map.swap (rev_map);
    *removed = ntotal - nkeep;
    return 0;
}

}  // namespace

extern "C" int
fpx_shim_id_selector (int64_t n, const int64_t *ids, FaissIDSelector **selector_p,
                      char *err, size_t err_size)
{
    *selector_p = nullptr;
    return guarded (err, err_size, [&] () -> int {
        std::unique_ptr<SortedIds> sorted (new SortedIds ());
        sorted->ids.assign (ids, ids + n);
        std::sort (sorted->ids.begin (), sorted->ids.end ());
        sorted->ids.erase (std::unique (sorted->ids.begin (), sorted->ids.end ()),
                           sorted->ids.end ());
        *selector_p = reinterpret_cast<FaissIDSelector *> (
            static_cast<faiss::IDSelector *> (sorted.release ()));
        return 0;
    });
}

extern "C" int
fpx_shim_remove_ids (FaissIndex *index_c, const FaissIDSelector *selector, size_t cap,
                     size_t *removed, size_t *need, int *rebuilt, char *err, size_t err_size)
{
    *removed = 0;
    *need = 0;
    *rebuilt = 0;
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *index = as_mutable (index_c);
        const faiss::IDSelector &sel = *reinterpret_cast<const faiss::IDSelector *> (selector);
        if (auto refine = dynamic_cast<faiss::IndexRefine *> (index))
            return remove_refined (refine, sel, cap, removed, need, rebuilt, err, err_size);
        auto map = dynamic_cast<faiss::IndexIDMap *> (index);
        //  The wrapped index changed behind the map (through a view of an
        //  anonymous index): FAISS's IDMap::remove_ids would assert.
        if (map && map->id_map.size () != (size_t) map->index->ntotal)
            bad ("remove_ids: the IDMap's id map holds " + std::to_string (map->id_map.size ())
                 + " ids but its index " + std::to_string (map->index->ntotal) + " vectors");
        if (map) {
            faiss::Index *inner = map->index;
            while (auto pt = dynamic_cast<faiss::IndexPreTransform *> (inner))
                inner = pt->index;
            if (auto ivf = dynamic_cast<faiss::IndexIVF *> (inner))
                return remove_mapped_ivf (map, ivf, sel, removed);
        }
        faiss::IndexHNSW *hnsw = stored_in_hnsw (map ? map->index : index);
        if (!hnsw) {
            auto sorted = dynamic_cast<const SortedIds *> (&sel);
            if (sorted && removes_by_hashtable (index)) {
                faiss::IDSelectorArray array (sorted->ids.size (), sorted->ids.data ());
                *removed = index->remove_ids (array);
            }
            else
                *removed = index->remove_ids (sel);
            return 0;
        }
        Rebuild rebuild (index, hnsw);
        rebuild.map = map;
        return run_rebuild (rebuild, sel, cap, removed, need, rebuilt, err, err_size);
    });
}

// ---- remove_ids in the background --------------------------------------

//  A removal whose graph is built on another thread (faiss_shim.h): the
//  Rebuild gathered under the lock, and the tombstones searches filter
//  with until it is committed.
struct fpx_shim_rebuild_t {
    Rebuild rebuild;
    Tombstones tomb;
    //  Adds applied to the old graph meanwhile, to apply again to the new
    //  one at the swap (in order, as the log replays them).
    struct Added {
        faiss::Index::idx_t n;
        std::vector<float> x;
        std::vector<faiss::Index::idx_t> ids;       //  empty: add, not add_with_ids
    };
    std::vector<Added> added;
    fpx_shim_rebuild_t (faiss::Index *top, faiss::IndexHNSW *hnsw) : rebuild (top, hnsw) {}
};

namespace {

const Tombstones *
tombstones_of (const fpx_shim_rebuild_t *pending)
{
    return &pending->tomb;
}

}   // namespace

extern "C" int
fpx_shim_remove_begin (FaissIndex *index_c, const FaissIDSelector *selector, size_t cap,
                       int64_t min_ntotal, size_t *removed, size_t *need,
                       fpx_shim_rebuild_t **rebuild_p, char *err, size_t err_size)
{
    *removed = 0;
    *need = 0;
    *rebuild_p = nullptr;
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *index = as_mutable (index_c);
        const faiss::IDSelector &sel = *reinterpret_cast<const faiss::IDSelector *> (selector);
        auto map = dynamic_cast<faiss::IndexIDMap *> (index);
        if (map && map->id_map.size () != (size_t) map->index->ntotal)
            return 1;               //  fpx_shim_remove_ids says why
        faiss::IndexHNSW *hnsw = dynamic_cast<faiss::IndexRefine *> (index) ? nullptr
                               : stored_in_hnsw (map ? map->index : index);
        if (!hnsw || index->ntotal < min_ntotal)
            return 1;
        std::unique_ptr<fpx_shim_rebuild_t> pending (new fpx_shim_rebuild_t (index, hnsw));
        Rebuild &rebuild = pending->rebuild;
        rebuild.map = map;
        rebuild.select (sel);
        if (rebuild.nkeep == rebuild.keep.size ())
            return 0;               //  nothing to remove
        //  The tombstones (the keep flags again, and 8 bytes a vector to
        //  renumber positions) count with the rebuild's own memory.
        bool positions = !map && fpx_shim_keys_are_positions (index_c);
        *need = rebuild.need () + rebuild.keep.size () * (positions ? 9 : 1)
              + (positions ? rebuild.nkeep * 8 : 0);
        if (*need > cap) {
            snprintf (err, err_size, "remove_ids rebuilds the HNSW graph of the %zu vectors "
                      "kept, which needs about %zu MiB, more than the %zu MiB allowed",
                      rebuild.nkeep, *need >> 20, cap >> 20);
            return FPX_ENOMEM;
        }
        Tombstones &tomb = pending->tomb;
        tomb.keep = rebuild.keep;
        tomb.removed = rebuild.keep.size () - rebuild.nkeep;
        if (positions) {
            tomb.renumber.resize (rebuild.keep.size ());
            tomb.kept.reserve (rebuild.nkeep);
            faiss::Index::idx_t next = 0;
            for (size_t i = 0; i < rebuild.keep.size (); i++) {
                tomb.renumber [i] = rebuild.keep [i] ? next++ : -1;
                if (rebuild.keep [i])
                    tomb.kept.push_back ((faiss::Index::idx_t) i);
            }
        }
        rebuild.gather ();
        *removed = tomb.removed;
        *rebuild_p = pending.release ();
        return 0;
    });
}

extern "C" int
fpx_shim_reconstruct_n_pending (const FaissIndex *index_c, const fpx_shim_rebuild_t *pending,
                                int64_t i0, int64_t n, float *out, char *err, size_t err_size)
{
    if (!pending)
        return fpx_shim_reconstruct_n (index_c, i0, n, out, err, err_size);
    return guarded (err, err_size, [&] () -> int {
        const faiss::Index *index = as_index (index_c);
        const Tombstones &tomb = pending->tomb;
        auto map2 = dynamic_cast<const faiss::IndexIDMap2 *> (index);
        bool positions = fpx_shim_keys_are_positions (index_c);
        if (!map2 && !positions)        //  FAISS's own answer (an IDMap has none)
            return fpx_shim_reconstruct_n (index_c, i0, n, out, err, err_size);
        for (int64_t i = 0; i < n; i++) {
            faiss::Index::idx_t key = i0 + i;
            if (map2) {
                //  A removed id is gone, as FAISS's rev_map.at says of
                //  any id it does not hold.
                auto found = map2->rev_map.find (key);
                if (found != map2->rev_map.end () && !tomb.is_member (found->second))
                    throw std::out_of_range ("_Map_base::at");
            }
            index->reconstruct (map2 ? key : tomb.original (key), out + i * index->d);
        }
        return 0;
    });
}

extern "C" int
fpx_shim_rebuild_build (fpx_shim_rebuild_t *pending, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        pending->rebuild.build ();
        return 0;
    });
}

extern "C" int
fpx_shim_rebuild_queue_add (fpx_shim_rebuild_t *pending, int64_t n, const float *x,
                            const int64_t *ids, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        fpx_shim_rebuild_t::Added added;
        added.n = n;
        added.x.assign (x, x + (size_t) n * (size_t) pending->rebuild.top->d);
        if (ids)
            added.ids.assign (ids, ids + n);
        pending->added.push_back (std::move (added));
        return 0;
    });
}

extern "C" void
fpx_shim_rebuild_unqueue_add (fpx_shim_rebuild_t *pending)
{
    if (!pending->added.empty ())
        pending->added.pop_back ();
}

extern "C" int
fpx_shim_rebuild_commit (fpx_shim_rebuild_t *pending, char *err, size_t err_size)
{
    pending->rebuild.commit ();
    return guarded (err, err_size, [&] () -> int {
        faiss::Index *top = pending->rebuild.top;
        for (auto &added : pending->added) {
            if (added.ids.empty ())
                top->add (added.n, added.x.data ());
            else
                top->add_with_ids (added.n, added.x.data (), added.ids.data ());
            std::vector<float> ().swap (added.x);
        }
        return 0;
    });
}

extern "C" int64_t
fpx_shim_rebuild_removed (const fpx_shim_rebuild_t *pending)
{
    return pending ? (int64_t) pending->tomb.removed : 0;
}

extern "C" void
fpx_shim_rebuild_destroy (fpx_shim_rebuild_t **pending_p)
{
    if (pending_p && *pending_p) {
        delete *pending_p;
        *pending_p = nullptr;
    }
}
