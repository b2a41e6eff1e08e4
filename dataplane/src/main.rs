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
    env_logger::Builder::new()
        .parse_filters(&args.log_filter())
        .format_target(false)
        .init();
    if args.validate {
        std::process::exit(zerohop::app::validate(&args));
    }
    if let Some(f) = &args.log_format {
        log::info!("--log-format {f:?} accepted; zerohop writes `[TIMESTAMP LEVEL] message` lines");
    }
    if let Err(e) = zerohop::app::run(args) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
