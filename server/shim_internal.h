/*  shim_internal.h — what the files of the FAISS shim (faiss_shim.cpp,
    shim_search.cpp, shim_io.cpp, shim_objects.cpp, shim_remove.cpp) share:
    the allocation cap, the exception guard, and the helpers more than one
    of them needs. Private to the shim; faiss_shim.h is its C interface.
*/
#ifndef FPX_SHIM_INTERNAL_H
#define FPX_SHIM_INTERNAL_H

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

namespace fpx_shim_internal {

//  The per-thread allocation cap (faiss_shim.cpp).
extern thread_local size_t s_cap_left;        //  bytes still allowed
extern thread_local bool s_cap_on;

struct AllocCap {
    explicit AllocCap (size_t cap) { s_cap_left = cap; s_cap_on = true; }
    ~AllocCap () { s_cap_on = false; }
};

//  A request argument that is out of range: FPX_EINVAL, never FAISS.
struct BadArgument {
    std::string message;
};

[[noreturn]] inline void
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

inline const faiss::Index *as_index (const FaissIndex *index)
{
    return reinterpret_cast<const faiss::Index *> (index);
}

inline faiss::Index *as_mutable (FaissIndex *index) { return reinterpret_cast<faiss::Index *> (index); }

//  An IndexShards or IndexReplicas without parts: FAISS's search writes
//  translations [0] of an empty vector there. Such a group is searched
//  nowhere (refused at the top, and never adopted: parts never leave).
inline bool
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
inline void
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

//  The tombstones of a background removal (shim_remove.cpp).
const Tombstones *tombstones_of (const fpx_shim_rebuild_t *pending);

}   // namespace fpx_shim_internal

#endif
