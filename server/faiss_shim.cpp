/*  faiss_shim.cpp — C entry points missing from FAISS 1.7.3's C API; see
    faiss_shim.h for why each one exists. Keep the shim small: anything
    the C API can do is done in C. The entry points live by concern in
    shim_search.cpp, shim_io.cpp, shim_objects.cpp and shim_remove.cpp;
    this file keeps what belongs to none of them.

    It also replaces the global operator new/delete (malloc/free based) so
    that allocations can be capped per thread while FAISS builds an index
    from untrusted input: an absurd factory string or index file then
    throws std::bad_alloc, which is reported, instead of exhausting memory.
*/
#include "shim_internal.h"

using namespace fpx_shim_internal;

// ---- allocation cap ------------------------------------------------------

namespace fpx_shim_internal {

thread_local size_t s_cap_left = 0;     //  bytes still allowed
thread_local bool s_cap_on = false;

}

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

#define FPX_STR_(x) #x
#define FPX_STR(x) FPX_STR_ (x)
extern "C" const char *
fpx_shim_faiss_version (void)
{
    return FPX_STR (FAISS_VERSION_MAJOR) "." FPX_STR (FAISS_VERSION_MINOR) "."
           FPX_STR (FAISS_VERSION_PATCH);
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
