// Every tensor op allocates its output; mimalloc keeps those buffers warm
// instead of mapping and zeroing fresh pages (1.5–2× on CPU, see
// `disback bench` and ../shared/notes/candle-cpu.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    disback::runtime::keep_freed_memory();
    match disback::cli::main() {
        Ok(ended) => ended.exit_code(),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
