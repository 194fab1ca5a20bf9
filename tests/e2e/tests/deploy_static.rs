//! Static validation of `deploy/` (no Docker daemon, no cluster needed):
//! yamllint over every YAML file, `hadolint` on the Dockerfile, the kustomize
//! base and production overlay rendered with `kubectl kustomize` and every
//! rendered object checked by `kubernetes-validate --strict` against
//! Kubernetes 1.35, the ConfigMap's TOML accepted by the real `profiled`, and
//! the properties the deployment guide promises (probes, rollout, drain,
//! read-only models, selectors). The tools come from the venv that
//! `tests/setup-python` creates next to `$PROFILED_TEST_PYTHON`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use profiled_e2e::{repo_root, test_python};
use serde_json::Value;

/// The Kubernetes version the manifests are validated against.
const K8S_VERSION: &str = "1.35.0";
/// Custom resources (no schema in kubernetes-validate): checked by hand below.
const CRD_KINDS: &[&str] = &["ServiceMonitor"];

/// A tool installed by tests/setup-python next to the venv's python.
fn tool(name: &str) -> PathBuf {
    let py = test_python();
    let p = py.parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run tests/setup-python (it installs {name} into the venv of \
         PROFILED_TEST_PYTHON={})",
        p.display(),
        py.display()
    );
    p
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kubectl kustomize DIR`, as YAML text and as JSON objects.
fn render(dir: &str) -> (String, Vec<Value>) {
    let yaml = run(Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(repo_root().join(dir)));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &yaml).unwrap();
    let json = run(Command::new(test_python())
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
             json.dump(docs, sys.stdout)",
        )
        .arg(tmp.path()));
    let objs: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert!(!objs.is_empty(), "{dir} rendered nothing");
    (yaml, objs)
}

/// kubernetes-validate --strict on every rendered object; only the listed
/// custom resources may lack a schema.
fn validate(dir: &str, yaml: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), yaml).unwrap();
    let out = run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", K8S_VERSION])
        .arg(tmp.path()));
    for line in out.lines() {
        if line.starts_with("INFO") && line.contains("passed for resource") {
            continue;
        }
        let crd = CRD_KINDS
            .iter()
            .any(|k| line.contains(&format!("Couldn't find schema for kind {k} ")));
        assert!(crd, "{dir}: kubernetes-validate: {line}");
    }
}

fn kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let v = kind(objs, k);
    assert_eq!(v.len(), 1, "expected one {k}, found {}", v.len());
    v[0]
}

/// True when every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The effective configuration of a TOML file as `profiled --print-config`
/// prints it (so every key is one profiled knows), converted to JSON.
fn effective_config(toml_text: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("profiled.toml");
    std::fs::write(&f, toml_text).unwrap();
    let bin = profiled_e2e::profiled_bin().unwrap();
    let printed = run(Command::new(bin)
        .arg("--config")
        .arg(&f)
        .arg("--print-config")
        .env_remove("PROFILED_CONFIG"));
    let p = dir.path().join("printed.toml");
    std::fs::write(&p, &printed).unwrap();
    let json = run(Command::new(test_python())
        .arg("-c")
        .arg("import json, sys, tomllib; json.dump(tomllib.load(open(sys.argv[1], 'rb')), sys.stdout)")
        .arg(&p));
    serde_json::from_str(&json).unwrap()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The properties docs/deploy.md promises, on one rendered kustomization.
fn check_objects(dir: &str, objs: &[Value]) {
    let dep = one(objs, "Deployment");
    let spec = &dep["spec"];
    let pod = &spec["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(
        selects(&spec["selector"]["matchLabels"], pod_labels),
        "{dir}: Deployment selector"
    );
    let ru = &spec["strategy"]["rollingUpdate"];
    assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{dir}");
    assert_eq!(ru["maxSurge"], 1, "{dir}: maxSurge");
    assert_eq!(ru["maxUnavailable"], 0, "{dir}: maxUnavailable");

    let containers = pod["spec"]["containers"].as_array().unwrap();
    let c = containers
        .iter()
        .find(|c| c["name"] == "profiled")
        .expect("a container named profiled");

    // Config: the mounted ConfigMap's TOML is valid for the real profiled.
    let cfg_vol = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_object())
        .expect("a ConfigMap volume");
    let cm_name = &cfg_vol["configMap"]["name"];
    let cm = kind(objs, "ConfigMap")
        .into_iter()
        .find(|m| &m["metadata"]["name"] == cm_name)
        .unwrap_or_else(|| panic!("{dir}: ConfigMap {cm_name} not rendered"));
    let toml_text = cm["data"]["profiled.toml"].as_str().unwrap();
    let cfg = effective_config(toml_text);
    let grace_ms = cfg["server"]["grace_period_ms"].as_u64().unwrap();
    assert!(
        cfg["server"]["max_connection_age_ms"].as_u64().unwrap() > 0,
        "{dir}: server.max_connection_age_ms must be set so clients rebalance"
    );
    let grpc_port = port_of(cfg["server"]["listen"].as_str().unwrap());
    // Probes go to the plaintext health-only listener when there is one (the
    // kubelet's gRPC probes cannot speak TLS), else to the gRPC port.
    let health_listen = cfg["server"]["health_listen"].as_str().unwrap_or("");
    let probe_port = if health_listen.is_empty() {
        assert!(
            cfg["tls"]["cert_file"].is_null(),
            "{dir}: TLS on without server.health_listen: gRPC probes would fail"
        );
        grpc_port
    } else {
        port_of(health_listen)
    };
    let metrics_port = port_of(cfg["metrics"]["listen"].as_str().unwrap());
    assert!(
        cfg["server"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:"),
        "{dir}: the pod must listen on all interfaces"
    );
    let models_repo = cfg["models"]["repository"].as_str().unwrap().to_string();
    // A Deployment's pods share no disk and do not keep one: an embedded
    // state store there would be per pod and lost with it. Live state is
    // off, or on a store every replica shares.
    let backend = cfg["state"]["backend"].as_str().unwrap();
    assert!(
        backend == "off" || backend == "redis",
        "{dir}: state.backend = {backend:?} in a Deployment (use redis, or off)"
    );
    // The HTTP/JSON edge is on, on all interfaces, with a connection cap.
    assert_eq!(cfg["http"]["enabled"], true, "{dir}: [http] enabled");
    let http_addr = cfg["http"]["addr"].as_str().unwrap();
    assert!(
        http_addr.starts_with("0.0.0.0:"),
        "{dir}: http.addr {http_addr} must listen on all interfaces"
    );
    let http_port = port_of(http_addr);
    assert!(
        cfg["http"]["max_connections"].as_u64().unwrap() >= 1,
        "{dir}: http.max_connections"
    );

    let ports = c["ports"].as_array().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{dir}: no container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("grpc"), grpc_port, "{dir}: grpc port vs server.listen");
    assert_eq!(
        port("metrics"),
        metrics_port,
        "{dir}: metrics port vs metrics.listen"
    );
    assert_eq!(port("http"), http_port, "{dir}: http port vs http.addr");
    let mut distinct = vec![grpc_port, http_port, metrics_port, probe_port];
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "{dir}: gRPC, HTTP and metrics ports must differ"
    );

    // Probes: native gRPC; liveness/startup on "" (never model state),
    // readiness on ProfileService.
    for probe in ["startupProbe", "livenessProbe"] {
        let g = &c[probe]["grpc"];
        assert_eq!(g["port"].as_u64(), Some(probe_port), "{dir}: {probe} port");
        assert!(
            g.get("service").is_none() || g["service"] == "",
            "{dir}: {probe} must check the server (\"\"), not a model-dependent service"
        );
    }
    let g = &c["readinessProbe"]["grpc"];
    assert_eq!(
        g["port"].as_u64(),
        Some(probe_port),
        "{dir}: readiness port"
    );
    assert!(
        ports
            .iter()
            .any(|p| p["containerPort"].as_u64() == Some(probe_port)),
        "{dir}: probe port {probe_port} is no container port"
    );
    assert_eq!(
        g["service"], "profiled.v1.ProfileService",
        "{dir}: readiness"
    );

    // Drain: preStop sleep, then SIGTERM; the kubelet waits longer than both.
    let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let tgps = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        tgps * 1000 > sleep * 1000 + grace_ms,
        "{dir}: terminationGracePeriodSeconds {tgps} must exceed preStop {sleep} s + \
         server.grace_period_ms {grace_ms}"
    );

    // Resources.
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "{dir}: cpu request"
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string(),
        "{dir}: memory request"
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{dir}: memory limit"
    );

    // Models: a read-only mount of a ReadOnlyMany claim at models.repository.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == models_repo.as_str())
        .unwrap_or_else(|| panic!("{dir}: nothing mounted at {models_repo}"));
    assert_eq!(
        mount["readOnly"], true,
        "{dir}: models mount must be read-only"
    );
    let vol = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let claim = &vol["persistentVolumeClaim"]["claimName"];
    let pvc = kind(objs, "PersistentVolumeClaim")
        .into_iter()
        .find(|p| &p["metadata"]["name"] == claim)
        .unwrap_or_else(|| panic!("{dir}: claim {claim} not rendered"));
    assert!(
        pvc["spec"]["accessModes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "ReadOnlyMany"),
        "{dir}: models claim must be ReadOnlyMany"
    );

    // Prometheus scrape annotations point at the metrics port.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true", "{dir}");
    assert_eq!(
        ann["prometheus.io/port"],
        metrics_port.to_string(),
        "{dir}: prometheus.io/port"
    );

    // Services: one balanced, one headless; both select the pods.
    let services = kind(objs, "Service");
    assert!(
        services.iter().any(
            |s| s["spec"]["clusterIP"] != "None" && selects(&s["spec"]["selector"], pod_labels)
        ),
        "{dir}: a ClusterIP Service selecting the pods"
    );
    assert!(
        services.iter().any(
            |s| s["spec"]["clusterIP"] == "None" && selects(&s["spec"]["selector"], pod_labels)
        ),
        "{dir}: a headless Service selecting the pods"
    );
    // The balanced Service exposes the HTTP port, aimed at the container's.
    let balanced = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] != "None" && selects(&s["spec"]["selector"], pod_labels))
        .unwrap();
    let http_svc = balanced["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap_or_else(|| panic!("{dir}: no port named http on the Service"));
    assert_eq!(
        http_svc["port"].as_u64(),
        Some(http_port),
        "{dir}: Service http port"
    );
    let target = &http_svc["targetPort"];
    assert!(
        target == "http" || target.as_u64() == Some(http_port),
        "{dir}: Service http targetPort {target}"
    );

    // HPA (autoscaling/v2) scales this Deployment; the PDB covers its pods.
    let hpa = one(objs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{dir}");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"],
        "{dir}: HPA target"
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2, "{dir}");
    let pdb = one(objs, "PodDisruptionBudget");
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels),
        "{dir}: the PodDisruptionBudget must select the pods"
    );

    // Custom resources: a ServiceMonitor must scrape a named Service port.
    for sm in kind(objs, "ServiceMonitor") {
        let port = &sm["spec"]["endpoints"][0]["port"];
        assert!(
            services.iter().any(|s| {
                selects(
                    &sm["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                ) && s["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| &p["name"] == port)
            }),
            "{dir}: ServiceMonitor port {port} is no port of a selected Service"
        );
    }
}

#[test]
fn yamllint_passes_on_deploy() {
    let r = repo_root();
    run(Command::new(tool("yamllint"))
        .arg("--strict")
        .arg("-c")
        .arg(r.join("deploy/.yamllint.yaml"))
        .arg(r.join("deploy")));
}

#[test]
fn hadolint_passes_and_dockerfile_keeps_its_promises() {
    let r = repo_root();
    let df = r.join("deploy/Dockerfile");
    run(Command::new(tool("hadolint")).arg(&df));
    let text = std::fs::read_to_string(&df).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 3, "multi-stage: {froms:?}");
    assert!(text.contains("cargo chef cook"), "dependency caching");
    let runtime = froms.last().unwrap();
    assert!(runtime.contains("distroless"), "runtime image: {runtime}");
    assert!(
        !text.contains("protobuf-compiler") && !text.contains("apt-get"),
        "no system protoc (protox compiles the protos)"
    );
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(
        text.contains("profilectl\", \"health\""),
        "HEALTHCHECK via profilectl health"
    );
    assert!(
        text.contains("/out/profiled /out/profilectl"),
        "both binaries"
    );
    // The ignore file BuildKit reads for this Dockerfile keeps data out.
    let ignore = std::fs::read_to_string(r.join("deploy/Dockerfile.dockerignore")).unwrap();
    for p in ["target/", "data/", "models/", ".git/"] {
        assert!(ignore.lines().any(|l| l == p), "{p} not ignored");
    }
    // The configuration baked into the image is valid for profiled.
    let cfg =
        effective_config(&std::fs::read_to_string(r.join("deploy/docker/profiled.toml")).unwrap());
    assert_eq!(cfg["server"]["listen"], "0.0.0.0:50051");
    // ... with the HTTP/JSON edge on, and every port it listens on exposed.
    assert_eq!(cfg["http"]["enabled"], true);
    assert_eq!(cfg["http"]["addr"], "0.0.0.0:8080");
    // The embedded store writes to a volume of its own, not into /models
    // (mounted read-only) nor the image's layers.
    let state_dir = cfg["state"]["embedded"]["dir"].as_str().unwrap();
    assert_eq!(cfg["state"]["backend"], "embedded");
    let volumes = text
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("a VOLUME line");
    assert!(
        volumes.contains(&format!("\"{state_dir}\"")),
        "state.embedded.dir {state_dir} is not a VOLUME: {volumes}"
    );
    assert!(!state_dir.starts_with("/models"), "{state_dir}");
    let expose: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    for p in ["50051", "8080", "9464"] {
        assert!(expose.contains(&p), "EXPOSE {p}: {expose:?}");
    }
}

#[test]
fn kustomize_base_renders_and_validates() {
    let (yaml, objs) = render("deploy/k8s/base");
    validate("base", &yaml);
    check_objects("base", &objs);
}

#[test]
fn kustomize_production_overlay_renders_and_validates() {
    let (yaml, objs) = render("deploy/k8s/overlays/production");
    validate("production", &yaml);
    check_objects("production", &objs);
    // The overlay's own changes reached the output.
    for o in &objs {
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "profiled", "{}", o["kind"]);
        }
    }
    let dep = one(&objs, "Deployment");
    let image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.contains('/') && image.contains(':'),
        "pinned image {image}"
    );
    assert_eq!(kind(&objs, "ServiceMonitor").len(), 1);
    // Live user state: Redis, its addresses from a Secret, never a Redis of
    // our own.
    let env = &dep["spec"]["template"]["spec"]["containers"][0]["env"];
    let urls = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "PROFILED__STATE__REDIS__URLS")
        .expect("PROFILED__STATE__REDIS__URLS in the production Deployment");
    assert_eq!(urls["valueFrom"]["secretKeyRef"]["name"], "profiled-redis");
    assert!(
        !yaml.contains("image: redis"),
        "the overlay deploys no Redis"
    );
    let cfg = effective_config(
        &std::fs::read_to_string(repo_root().join("deploy/k8s/overlays/production/profiled.toml"))
            .unwrap(),
    );
    assert_eq!(cfg["state"]["backend"], "redis");
    assert_eq!(cfg["state"]["redis"]["cluster"], true);
}

#[test]
fn publish_script_publishes_atomically_with_increasing_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    profiled_e2e::make_model(&src, 5).unwrap();
    let repo = tmp.path().join("models");
    let script = repo_root().join("deploy/publish-model.sh");
    for want in 1..=2u64 {
        let out = run(Command::new("bash")
            .arg(&script)
            .arg(&src)
            .arg(&repo)
            .arg("synth"));
        assert!(out.contains(&format!("version {want}")), "{out}");
        let dir = repo.join("synth").join(want.to_string());
        for f in [
            "model.json",
            "model.safetensors",
            "items.index",
            "users.index",
        ] {
            assert_eq!(
                std::fs::read(dir.join(f)).unwrap(),
                std::fs::read(src.join(f)).unwrap(),
                "{f}"
            );
        }
    }
    // No temporary folder left; the store lists exactly the two versions.
    let names: Vec<String> = std::fs::read_dir(repo.join("synth"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Bad input is refused without touching the repository.
    let o = Command::new("bash")
        .arg(&script)
        .arg(tmp.path().join("nope"))
        .arg(&repo)
        .arg("synth")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing model.json"));
    let o = Command::new("bash")
        .arg(&script)
        .arg(&src)
        .arg(&repo)
        .arg("../x")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad model name"));
}
