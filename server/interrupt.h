/*  interrupt.h — stops a long FAISS call at its request's deadline.

    FAISS polls one process-wide faiss::InterruptCallback from the thread
    that called it (Clustering::train between k-means iterations, IVF
    training through it, add/search between blocks); ours answers "stop"
    once the calling worker's deadline, kept per thread, has passed.
    OpenMP threads have no deadline and are never told to stop: FAISS only
    throws from the calling thread, outside its parallel regions.

    Workers arm it only for calls whose interruption leaves the index as
    it was or marks it untrained (train, kmeans, and remove_ids, whose
    HNSW rebuild is built aside and dropped when stopped): an add stopped
    between blocks would keep half its vectors.
*/
#ifndef FPX_INTERRUPT_H_INCLUDED
#define FPX_INTERRUPT_H_INCLUDED

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Installs the callback (once, before the workers start).              */
void fpx_interrupt_install (void);

/*  Arms (deadline > 0, monotonic seconds) or disarms (0) the calling
    thread's deadline; arming clears fpx_interrupt_fired.                */
void fpx_interrupt_arm (double deadline);

/*  Whether FAISS was told to stop since the thread's last arm.          */
bool fpx_interrupt_fired (void);

#ifdef __cplusplus
}
#endif

#endif
