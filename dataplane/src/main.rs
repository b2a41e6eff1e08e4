//! `zerohop`: parse flags, run. See `zerohop --help` and ARCHITECTURE.md.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = match zerohop::args::Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zerohop: {e} (see --help)");
            std::process::exit(2);
        }
    };
    let level = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    env_logger::Builder::new()
        .parse_filters(&level)
        .format_target(false)
        .init();
    if let Err(e) = zerohop::app::run(args) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
