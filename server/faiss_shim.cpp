/*  faiss_shim.cpp — C entry points missing from FAISS 1.7.3's C API; see
    faiss_shim.h for why each one exists. Keep this file small: anything
    the C API can do is done in C.

    It also replaces the global operator new/delete (malloc/free based) so
    that allocations can be capped per thread while FAISS builds an index
    from untrusted input: an absurd factory string or index file then
    throws std::bad_alloc, which is reported, instead of exhausting memory.
*/
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include "faiss_shim.h"
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

//  Runs fn, turning every exception into a code and a message.
template <typename Fn>
int guarded (char *err, size_t err_size, Fn fn)
{
    try {
        return fn ();
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

//  Per-request search parameters for an index tree. Owns what it builds.
struct Overrides {
    int nprobe, efSearch;
    bool nprobe_used = false, ef_used = false;
    std::vector<std::unique_ptr<faiss::SearchParameters>> owned;

    Overrides (int nprobe, int efSearch) : nprobe (nprobe), efSearch (efSearch) {}

    bool any () const { return nprobe > 0 || efSearch > 0; }

    //  Parameters for index, or nullptr where none apply.
    const faiss::SearchParameters *build (const faiss::Index *index)
    {
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersPreTransform> ();
            p->index_params = const_cast<faiss::SearchParameters *> (build (pt->index));
            return keep (std::move (p));
        }
        if (auto ivf = dynamic_cast<const faiss::IndexIVF *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersIVF> ();
            p->nprobe = nprobe > 0 ? (size_t) nprobe : ivf->nprobe;
            p->max_codes = ivf->max_codes;
            nprobe_used |= nprobe > 0;
            p->quantizer_params = const_cast<faiss::SearchParameters *> (build (ivf->quantizer));
            return keep (std::move (p));
        }
        if (auto hnsw = dynamic_cast<const faiss::IndexHNSW *> (index)) {
            auto p = std::make_unique<faiss::SearchParametersHNSW> ();
            p->efSearch = efSearch > 0 ? efSearch : hnsw->hnsw.efSearch;
            p->check_relative_distance = hnsw->hnsw.check_relative_distance;
            ef_used |= efSearch > 0;
            return keep (std::move (p));
        }
        return nullptr;
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
        return 0;
    }
};

//  IndexIDMap refuses SearchParameters in 1.7.3, so with overrides the
//  search goes to the wrapped index and labels are mapped here, exactly as
//  IndexIDMap::search maps them.
struct Target {
    const faiss::Index *index;
    const std::vector<faiss::Index::idx_t> *id_map = nullptr;

    Target (const faiss::Index *top, bool overrides) : index (top)
    {
        auto idmap = dynamic_cast<const faiss::IndexIDMap *> (top);
        if (overrides && idmap) {
            index = idmap->index;
            id_map = &idmap->id_map;
        }
    }

    void map_labels (faiss::Index::idx_t *labels, size_t count) const
    {
        if (!id_map)
            return;
        for (size_t i = 0; i < count; i++)
            if (labels [i] >= 0)
                labels [i] = (*id_map) [labels [i]];
    }
};

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
        if (data) {
            if (bytes > capacity - pos)
                return 0;
            std::memcpy (data + pos, ptr, bytes);
        }
        pos += bytes;
        return nitems;
    }
};

const faiss::Index *as_index (const FaissIndex *index)
{
    return reinterpret_cast<const faiss::Index *> (index);
}

}   // namespace

extern "C" int
fpx_shim_search (const FaissIndex *index, int64_t n, const float *x, int64_t k,
                 int nprobe, int efSearch, float *D, int64_t *I,
                 char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        Overrides overrides (nprobe, efSearch);
        Target target (as_index (index), overrides.any ());
        const faiss::SearchParameters *params =
            overrides.any () ? overrides.build (target.index) : nullptr;
        if (int rc = overrides.check (err, err_size))
            return rc;
        target.index->search (n, x, k, D, I, params);
        target.map_labels (I, (size_t) n * (size_t) k);
        return 0;
    });
}

extern "C" int
fpx_shim_range_search (const FaissIndex *index, int64_t n, const float *x,
                       float radius, int nprobe, int efSearch,
                       uint64_t **lims_p, float **D_p, int64_t **I_p,
                       size_t *total_p, size_t max_total,
                       char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        Overrides overrides (nprobe, efSearch);
        Target target (as_index (index), overrides.any ());
        const faiss::SearchParameters *params =
            overrides.any () ? overrides.build (target.index) : nullptr;
        if (int rc = overrides.check (err, err_size))
            return rc;
        faiss::RangeSearchResult result (n);
        target.index->range_search (n, x, radius, &result, params);
        size_t total = result.lims [n];
        if (total > max_total) {
            snprintf (err, err_size, "range search found %zu results, over the limit of %zu"
                      " (use a smaller radius or fewer queries)", total, max_total);
            return FPX_ETOOBIG;
        }
        uint64_t *lims = (uint64_t *) std::malloc ((n + 1) * sizeof (uint64_t));
        float *D = (float *) std::malloc (total ? total * sizeof (float) : 1);
        int64_t *I = (int64_t *) std::malloc (total ? total * sizeof (int64_t) : 1);
        if (!lims || !D || !I) {
            std::free (lims); std::free (D); std::free (I);
            throw std::bad_alloc ();
        }
        for (int64_t i = 0; i <= n; i++)
            lims [i] = result.lims [i];
        std::memcpy (D, result.distances, total * sizeof (float));
        std::memcpy (I, result.labels, total * sizeof (int64_t));
        target.map_labels (I, total);
        *lims_p = lims; *D_p = D; *I_p = I; *total_p = total;
        return 0;
    });
}

extern "C" int
fpx_shim_serialize (const FaissIndex *index, int size_only,
                    uint8_t **bytes_p, size_t *size_p, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        SpanWriter counter (nullptr, 0);
        faiss::write_index (as_index (index), &counter);
        *size_p = counter.pos;
        if (size_only)
            return 0;
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
fpx_shim_deserialize (const uint8_t *bytes, size_t size, size_t alloc_cap,
                      FaissIndex **index_p, char *err, size_t err_size)
{
    return guarded (err, err_size, [&] () -> int {
        SpanReader reader (bytes, size);
        faiss::Index *index;
        {
            AllocCap cap (alloc_cap);
            index = faiss::read_index (&reader, 0);
        }
        *index_p = reinterpret_cast<FaissIndex *> (index);
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
        *index_p = reinterpret_cast<FaissIndex *> (index);
        return 0;
    });
}

extern "C" int
fpx_shim_has_ids (const FaissIndex *index)
{
    const faiss::Index *top = as_index (index);
    return dynamic_cast<const faiss::IndexIDMap *> (top) != nullptr
        || dynamic_cast<const faiss::IndexIVF *> (top) != nullptr;
}

#define FPX_STR_(x) #x
#define FPX_STR(x) FPX_STR_ (x)
extern "C" const char *
fpx_shim_faiss_version (void)
{
    return FPX_STR (FAISS_VERSION_MAJOR) "." FPX_STR (FAISS_VERSION_MINOR) "."
           FPX_STR (FAISS_VERSION_PATCH);
}
