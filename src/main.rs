//! The `sipfork` binary: the command line lives in [`sipfork::app::cli`].

/// The process's allocator: jemalloc.
///
/// A proxy's heap is mostly message-sized buffers that live from microseconds to Timer J/K's
/// 32 s. glibc's malloc keeps them in one contiguous heap per thread and returns only the free
/// space at its top; when the traffic's message sizes shift (every Call-ID growing a digit, say),
/// the new sizes do not fit the old holes, the heap grows at its top while the holes are still
/// pinned by live neighbours, and the resident high-water mark stays for the life of the process
/// (the soak's one-time RSS step at 34 minutes, `loadtest/README.md` run 6). jemalloc keeps each
/// size class on pages of its own and purges pages no class uses after its decay time, so
/// resident memory follows the live state (`docs/memory.md`). `engine::os::heap_in_use` reads its
/// statistics.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Decay on jemalloc's own thread, so that an idle proxy hands freed pages back after their
    // decay time too (otherwise decay advances only when the process allocates or frees). Where
    // it cannot start one, pages still go back at the arena's next use.
    #[cfg(target_os = "linux")]
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    sipfork::app::cli::main()
}
