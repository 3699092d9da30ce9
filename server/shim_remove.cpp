/*  shim_remove.cpp — remove_ids, and the HNSW rebuild where FAISS cannot
    remove (in the request, or in the background with tombstones).
*/
#include "shim_internal.h"

using namespace fpx_shim_internal;

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

namespace fpx_shim_internal {

const Tombstones *
tombstones_of (const fpx_shim_rebuild_t *pending)
{
    return &pending->tomb;
}

}   // namespace fpx_shim_internal

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
