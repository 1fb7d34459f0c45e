//! How long reading and checking `aspera.conf` takes as the rule count grows (the rule
//! distinguishability check compares rules pairwise, so this watches its cost).
//!
//! Run: `cargo bench --bench config_parse`

use std::fmt::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fasp_proxy::config;

/// A valid configuration with `n` rules, each on its own proxy address.
fn config_with_rules(n: usize) -> String {
    let mut rules = String::new();
    for i in 0..n {
        let _ = writeln!(
            rules,
            "<rule host_ip=\"203.0.{}.{}\"><hosts><host>198.51.100.{}:22</host><host>198.51.100.{}:22</host></hosts>\
             <squash_user>xfer</squash_user><keyfile>/home/$(user)/.ssh/id_ed25519</keyfile></rule>",
            i / 256,
            i % 256,
            i % 250 + 1,
            (i + 1) % 250 + 1
        );
    }
    format!("<CONF><server><rproxy><enabled>true</enabled><rules>\n{rules}</rules></rproxy></server></CONF>")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_parse");
    for n in [1usize, 100, 1000] {
        let text = config_with_rules(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                let loaded = config::parse_str(text, Path::new("bench.conf"));
                assert!(loaded.is_ok());
                loaded
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
