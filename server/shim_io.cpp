/*  shim_io.cpp — index files: serialize, deserialize (under the
    allocation cap), factory strings both ways.
*/
#include "shim_internal.h"

using namespace fpx_shim_internal;

namespace {

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
