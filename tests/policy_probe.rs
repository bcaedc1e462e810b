use driftwarden::policy::*;
#[test]
fn probe() {
    let dir = std::env::var("PROBE_DIR").unwrap_or("/tmp/probe/p".into());
    let cfg = PolicyConfig { dirs: vec![PolicyDir::new(&dir)], data_files: vec![] };
    let input: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/tmp/probe/in.json").unwrap()).unwrap();
    match PolicyEngine::load(&cfg) {
        Ok(e) => println!("{:?}", e.evaluate(&input)),
        Err(e) => println!("ERR {e}"),
    }
    let mut eng = regorus::Engine::new();
    for f in std::fs::read_dir(&dir).unwrap() { let p = f.unwrap().path(); if p.extension().map(|e| e=="rego").unwrap_or(false) { eng.add_policy_from_file(&p).unwrap(); } }
    eng.add_data(regorus::Value::from_json_file(format!("{dir}/data.json")).unwrap()).unwrap();
    eng.set_input(regorus::Value::from_json_file("/tmp/probe/in.json").unwrap());
    for q in std::env::var("PROBE_Q").unwrap_or("data.driftwarden.lib.nodes;data.driftwarden.lib.config;data.driftwarden.lib.s".into()).split(';') {
        println!("{q} => {:?}", eng.eval_rule(q.to_string()).map(|v| v.to_string()));
    }
}
