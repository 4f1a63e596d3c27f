//! `weir-fuzz [TARGET…] [--seconds N] [--seed S]`: fuzzes each target (all by default) for N
//! seconds (default 60) and prints the inputs tried and the findings; exit code 1 when there
//! is a finding. Findings are written to `fuzz/findings/TARGET-N.bin`.

use std::time::Duration;

fn main() {
    let mut names = Vec::new();
    let mut seconds = 60.0f64;
    let mut seed = 0x5eed_u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = match args.next().and_then(|s| s.parse::<f64>().ok()) {
                    Some(s) if s.is_finite() && s > 0.0 => s,
                    _ => {
                        eprintln!("weir-fuzz: --seconds takes a number of seconds above 0");
                        std::process::exit(2)
                    }
                }
            }
            "--seed" => {
                seed = match args.next().and_then(|s| s.parse().ok()) {
                    Some(s) => s,
                    None => {
                        eprintln!("weir-fuzz: --seed takes a whole number");
                        std::process::exit(2)
                    }
                }
            }
            "--list" => {
                for t in weir_fuzz::targets::ALL {
                    println!("{:<20} {}", t.name, t.about);
                }
                return;
            }
            "-h" | "--help" => {
                println!("weir-fuzz [TARGET…] [--seconds N] [--seed S] [--list]");
                return;
            }
            name => names.push(name.to_owned()),
        }
    }
    let targets: Vec<&weir_fuzz::Target> = if names.is_empty() {
        weir_fuzz::targets::ALL.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                weir_fuzz::target(n).unwrap_or_else(|| {
                    eprintln!("weir-fuzz: no target {n:?} (--list lists them)");
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let mut found = 0;
    println!(
        "{:<20} {:>12} {:>10} {:>10} {:>9}",
        "target", "inputs", "inputs/s", "json %", "findings"
    );
    for t in targets {
        let report = weir_fuzz::fuzz(t, Duration::from_secs_f64(seconds), seed);
        let per_second = report.inputs as f64 / report.elapsed.as_secs_f64().max(1e-9);
        let json = if t.json {
            format!(
                "{:.0}",
                100.0 * report.json_inputs as f64 / report.inputs.max(1) as f64
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:<20} {:>12} {:>10.0} {:>10} {:>9}",
            t.name,
            report.inputs,
            per_second,
            json,
            report.findings.len()
        );
        for (i, (message, input)) in report.findings.iter().enumerate() {
            let path = format!("fuzz/findings/{}-{i}.bin", t.name);
            if let Err(e) =
                std::fs::create_dir_all("fuzz/findings").and_then(|()| std::fs::write(&path, input))
            {
                eprintln!("weir-fuzz: cannot write {path}: {e}");
            }
            println!(
                "  finding: {message} (input in {path}: {:?})",
                String::from_utf8_lossy(&input[..input.len().min(200)])
            );
        }
        found += report.findings.len();
    }
    if found > 0 {
        std::process::exit(1);
    }
}
