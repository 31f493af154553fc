/* ---- Signals: a C program's are its own ----
 * The runtime would otherwise take two things from the program: its handlers (start.c saves
 * and restores them around the runtime's start) and the delivery of process signals to the
 * runtime's own threads (runtime_threads.c blocks them there). */
#include "nh_internal.h"

/* A signal sent to the process goes to any thread that does not block it: not to the
 * runtime's (the finalizer would take a SIGUSR1 that the program blocked in its own threads
 * to keep it pending; Python's test_signal saw that). They keep the runtime's own real-time
 * signal (thread suspension) and the faults, which are the thread's own. */
static inline void block_process_signals(void)
{
    sigset_t async;
    sigfillset(&async);
    for (int sig = SIGRTMIN; sig <= SIGRTMIN + 1; sig++) sigdelset(&async, sig);
    const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&async, faults[i]);
    pthread_sigmask(SIG_BLOCK, &async, NULL);
}

/* The runtime installs handlers for SIGSEGV and its kin (managed null references) that
 * swallow a raised SIGSEGV: the program gets back what it had. The runtime's real-time signal
 * (thread suspension) stays. Managed code that faults in here is a bug either way, and a
 * crash is the answer. before has SIGRTMIN entries. */
static inline void save_signal_handlers(struct sigaction *before)
{
    for (int sig = 1; sig < SIGRTMIN; sig++) sigaction(sig, NULL, &before[sig]);
}

static inline void restore_signal_handlers(const struct sigaction *before)
{
    for (int sig = 1; sig < SIGRTMIN; sig++) {
        struct sigaction now;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &now) == 0 && now.sa_handler != before[sig].sa_handler)
            sigaction(sig, &before[sig], NULL);
    }
}
