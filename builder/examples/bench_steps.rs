//! The builder's steps one at a time, for `bench/builder.sh` to time against
//! the standard tools:
//!
//!   bench_steps pull-unpack REFERENCE ROOT CACHE   (vs skopeo copy + umoci unpack)
//!   bench_steps squash ROOT OUT.sqfs               (vs bare mksquashfs)

use std::path::Path;
use std::process::ExitCode;

use sifhub_builder::oci::{no_progress, ApplyOptions, ImageReference, Puller, RegistryConfig};
use sifhub_builder::squashfs::{squash, SquashOptions};

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args {
        [cmd, reference, root, cache] if cmd == "pull-unpack" => {
            let reference = ImageReference::parse(reference)?;
            let puller = Puller::new(RegistryConfig::new(cache))?;
            let image = puller.pull_blocking(&reference, &no_progress)?;
            std::fs::create_dir_all(root)?;
            let report = image.apply_to(Path::new(root), ApplyOptions::default())?;
            eprintln!(
                "{} layers, base {}",
                report.layers.len(),
                image.base_digest()
            );
            Ok(())
        }
        [cmd, root, out] if cmd == "squash" => {
            squash(
                Path::new(root),
                Path::new(out),
                &SquashOptions::default(),
                &mut |_| {},
            )?;
            Ok(())
        }
        _ => Err("usage: bench_steps pull-unpack REFERENCE ROOT CACHE | squash ROOT OUT".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
