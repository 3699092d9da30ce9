/*  select.cpp — search-time selection decoded from a request; see
    select.h. The wire form (docs/PROTOCOL.md, "Search-time selection"):
    "sel" is an array of at most FPX_SELECTOR_NODES_MAX nodes in prefix
    order, each an array whose first element names its kind:
        ["all"]  ["range", imin, imax, assume_sorted]  ["not"] (its operand
        follows)  ["array", n]  ["batch", n]  ["bitmap", nbytes]
    and the last three take their n int64 ids / nbytes bytes, in node
    order, from the selector frame, which must hold exactly that much.
*/
#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <faiss/impl/IDSelector.h>

#include "fpx_protocol.h"
#include "select.h"

namespace {

//  FAISS's IDSelectorArray tests membership by a linear scan and its
//  IDSelectorBatch hashes at several times 8 bytes an id: both are served
//  by a sorted, deduplicated copy (8 bytes an id, a binary search a test),
//  which selects the same ids. FAISS 1.7.3's searches look at no other
//  property of either class.
struct SortedIdSelector : faiss::IDSelector {
    std::vector<faiss::Index::idx_t> ids;
    bool is_member (faiss::Index::idx_t id) const override
    {
        return std::binary_search (ids.begin (), ids.end (), id);
    }
};

//  FAISS's IDSelectorBitmap over a copy that it owns.
struct OwnedBitmapSelector : faiss::IDSelectorBitmap {
    std::vector<uint8_t> bytes;
    explicit OwnedBitmapSelector (std::vector<uint8_t> &&b)
        : faiss::IDSelectorBitmap (b.size (), nullptr), bytes (std::move (b))
    {
        bitmap = bytes.data ();
    }
};

struct Failure {
    int code;
    std::string text;
};

[[noreturn]] void
fail (int code, const std::string &text)
{
    throw Failure { code, text };
}

//  Reads the nodes of "sel" one by one and builds the tree.
struct Decoder {
    const uint8_t *needle, *ceiling;       //  the msgpack array's elements
    uint32_t nodes_left;
    const uint8_t *bulk;
    size_t bulk_size, bulk_used = 0;
    std::vector<std::unique_ptr<faiss::IDSelector>> &owned;

    Decoder (const fpx_mp_value_t &array, const uint8_t *bulk, size_t bulk_size,
             std::vector<std::unique_ptr<faiss::IDSelector>> &owned)
        : needle (array.v.seq.ptr), ceiling (array.v.seq.end), nodes_left (array.v.seq.count),
          bulk (bulk), bulk_size (bulk_size), owned (owned) {}

    fpx_mp_value_t read (const uint8_t **at, const uint8_t *end)
    {
        fpx_mp_value_t value;
        if (fpx_mp_read (&value, at, end))
            fail (FPX_EPROTO, "malformed 'sel' node");
        return value;
    }

    int64_t integer (const uint8_t **at, const uint8_t *end, const char *what)
    {
        fpx_mp_value_t value = read (at, end);
        if (value.type != FPX_MP_INT || value.is_unsigned)
            fail (FPX_EINVAL, std::string ("'sel': ") + what + " must be an int64");
        return value.v.i;
    }

    //  count items of item_size bytes from the selector frame.
    const uint8_t *take (int64_t count, size_t item_size, const char *kind)
    {
        size_t left = bulk_size - bulk_used;
        if (count < 0 || (uint64_t) count > left / item_size)
            fail (FPX_EINVAL, std::string ("'sel': ") + kind + " of " + std::to_string (count)
                  + " items, but the selector frame has " + std::to_string (left)
                  + " bytes left");
        const uint8_t *at = bulk + bulk_used;
        bulk_used += (size_t) count * item_size;
        return at;
    }

    const faiss::IDSelector *keep (faiss::IDSelector *selector)
    {
        owned.emplace_back (selector);
        return selector;
    }

    //  One node and, for "not", its operand. Depth is bounded by the
    //  node count, itself at most FPX_SELECTOR_NODES_MAX.
    const faiss::IDSelector *node ()
    {
        if (nodes_left == 0)
            fail (FPX_EINVAL, "'sel': a \"not\" node has no operand");
        nodes_left--;
        fpx_mp_value_t value = read (&needle, ceiling);
        if (value.type != FPX_MP_ARRAY || value.v.seq.count == 0)
            fail (FPX_EINVAL, "'sel': each node must be a non-empty array");
        const uint8_t *at = value.v.seq.ptr, *end = value.v.seq.end;
        uint32_t arity = value.v.seq.count - 1;
        fpx_mp_value_t kind_value = read (&at, end);
        if (kind_value.type != FPX_MP_STR)
            fail (FPX_EINVAL, "'sel': a node's first element must be its kind (a string)");
        std::string kind (kind_value.v.str.ptr, kind_value.v.str.len);
        uint32_t expected = kind == "range" ? 3 : kind == "array" || kind == "batch"
                          || kind == "bitmap" ? 1 : kind == "not" || kind == "all" ? 0 : 99;
        if (expected == 99)
            fail (FPX_EINVAL, "'sel': unknown selector kind '" + kind.substr (0, 32) + "' (range, "
                  "array, batch, bitmap, not, all)");
        if (arity != expected)
            fail (FPX_EINVAL, "'sel': a \"" + kind + "\" node takes " + std::to_string (expected)
                  + " arguments");
        if (kind == "all")
            return keep (new faiss::IDSelectorAll ());
        if (kind == "not") {
            const faiss::IDSelector *operand = node ();
            return keep (new faiss::IDSelectorNot (operand));
        }
        if (kind == "range") {
            int64_t imin = integer (&at, end, "imin");
            int64_t imax = integer (&at, end, "imax");
            fpx_mp_value_t sorted = read (&at, end);
            if (sorted.type != FPX_MP_BOOL)
                fail (FPX_EINVAL, "'sel': a range's assume_sorted must be a bool");
            return keep (new faiss::IDSelectorRange (imin, imax, sorted.v.b));
        }
        int64_t count = integer (&at, end, "count");
        if (kind == "bitmap") {
            const uint8_t *bytes = take (count, 1, "bitmap");
            return keep (new OwnedBitmapSelector (std::vector<uint8_t> (bytes, bytes + count)));
        }
        const uint8_t *bytes = take (count, sizeof (int64_t), kind.c_str ());
        auto sorted = std::make_unique<SortedIdSelector> ();
        sorted->ids.resize ((size_t) count);
        if (count)
            std::memcpy (sorted->ids.data (), bytes, (size_t) count * sizeof (int64_t));
        std::sort (sorted->ids.begin (), sorted->ids.end ());
        sorted->ids.erase (std::unique (sorted->ids.begin (), sorted->ids.end ()),
                           sorted->ids.end ());
        return keep (sorted.release ());
    }
};

}   // namespace

struct fpx_select_t {
    std::vector<std::unique_ptr<faiss::IDSelector>> owned;
    const faiss::IDSelector *root = nullptr;
    int64_t max_codes = -1;
};

extern "C" int
fpx_select_decode (const fpx_params_t *params, const void *bulk, size_t bulk_size,
                   fpx_select_t **select_p, char *err, size_t err_size)
{
    *select_p = nullptr;
    fpx_mp_value_t sel;
    int64_t max_codes = -1;
    int has_sel = fpx_params_get_value (params, "sel", &sel) == 0;
    int rc = fpx_params_get_int (params, "max_codes", &max_codes);
    if (rc < 0 || (rc == 0 && max_codes < 0)) {
        snprintf (err, err_size, "'max_codes' must be an int, 0 (no limit) or more");
        return FPX_EINVAL;
    }
    if (!has_sel && bulk) {
        snprintf (err, err_size, "a selector frame came without 'sel'");
        return FPX_EPROTO;
    }
    if (!has_sel && rc != 0)
        return 0;
    try {
        auto select = std::make_unique<fpx_select_t> ();
        select->max_codes = max_codes;
        if (has_sel) {
            if (sel.type != FPX_MP_ARRAY || sel.v.seq.count == 0
            ||  sel.v.seq.count > FPX_SELECTOR_NODES_MAX)
                fail (FPX_EINVAL, "'sel' must be an array of 1 to "
                      + std::to_string (FPX_SELECTOR_NODES_MAX) + " nodes");
            Decoder decoder (sel, (const uint8_t *) bulk, bulk ? bulk_size : 0, select->owned);
            select->root = decoder.node ();
            if (decoder.nodes_left)
                fail (FPX_EINVAL, "'sel': " + std::to_string (decoder.nodes_left)
                      + " nodes after the selector's last");
            if (decoder.bulk_used != decoder.bulk_size)
                fail (FPX_EINVAL, "'sel' takes " + std::to_string (decoder.bulk_used)
                      + " bytes of the selector frame, which has "
                      + std::to_string (decoder.bulk_size));
        }
        *select_p = select.release ();
        return 0;
    }
    catch (const Failure &failure) {
        snprintf (err, err_size, "%s", failure.text.c_str ());
        return failure.code;
    }
    catch (const std::bad_alloc &) {
        snprintf (err, err_size, "out of memory for the selector");
        return FPX_ENOMEM;
    }
}

extern "C" void
fpx_select_destroy (fpx_select_t **self_p)
{
    if (self_p) {
        delete *self_p;
        *self_p = nullptr;
    }
}

const faiss::IDSelector *
fpx_select_selector (const fpx_select_t *self)
{
    return self ? self->root : nullptr;
}

int64_t
fpx_select_max_codes (const fpx_select_t *self)
{
    return self ? self->max_codes : -1;
}
