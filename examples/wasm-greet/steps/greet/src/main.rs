//! A weir step as a WASI command: reads the step input (JSON) on stdin, prints its output
//! (JSON) on stdout, logs to stderr. The same program would run as a `process` step.

use std::io::Read;

use serde_json::{Value, json};

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("could not read the step input: {e}");
        std::process::exit(1);
    }
    let input: Value = match serde_json::from_str(&input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("the step input is not JSON: {e}");
            std::process::exit(1);
        }
    };
    let user = &input["event"]["user"];
    let Some(email) = user["email"].as_str() else {
        // A 4xx status fails the step without retries: the same input would fail again.
        println!("{}", json!({"status": 422, "error": "the user has no email"}));
        return;
    };
    let name = email.split('@').next().unwrap_or(email);
    let plan = input["event"]["data"]["plan"].as_str().unwrap_or("free");
    eprintln!("greeting {email} (attempt {})", input["ctx"]["attempt"]);
    println!(
        "{}",
        json!({
            "greeting": format!("Hello, {name}! Welcome to the {plan} plan."),
            "to": email,
            "runtime": "wasm",
        })
    );
}
