//! The explanation viewer (`/ui/`) in a real headless Chromium, driven over
//! WebDriver (Debian's `chromium` + `chromium-driver`, installed by
//! `tests/setup-browser`; the W3C protocol spoken with the plain HTTP
//! client of `profiled_e2e::http`). Against the real binary with a
//! synthetic model: an explanation by pasted features, a look-up by the id
//! of a users index user, and an explanation by the id of a user tracked
//! over HTTP (live state); every bar and heatmap cell carries the number the API answers for
//! the same request (compared with a direct API call), the browser console
//! stays free of errors, and screenshots are saved under `target/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use profiled_e2e::{Server, free_port, http_request, post_json, repo_root, synth_repo};
use serde_json::{Value, json};

/// The first of `names` found on `PATH` or in `/usr/bin`.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A chromedriver process and one browser session; both ended on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Result<Browser> {
        let addr = free_port()?;
        let port = addr.rsplit(':').next().context("port")?.to_string();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::tempdir()?;
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(a) = http_request(&b.addr, "GET", "/status", &[], None)
                && a.json().is_ok_and(|j| j["value"]["ready"] == true)
            {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !ready {
            bail!("chromedriver did not become ready on {}", b.addr);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,3000",
                    format!("--user-data-dir={}", b._profile.path().display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b.call("POST", "/session", Some(&caps))?;
        b.session = v["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {v}"))?
            .to_string();
        Ok(b)
    }

    /// A WebDriver command; its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(serde_json::to_vec).transpose()?;
        let a = http_request(
            &self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            bytes.as_deref(),
        )?;
        let j = a.json()?;
        if a.status != 200 {
            bail!("WebDriver {method} {path}: HTTP {}: {j}", a.status);
        }
        Ok(j["value"].clone())
    }

    fn cmd(&self, method: &str, rest: &str, body: Option<&Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{rest}", self.session), body)
    }

    fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(&json!({ "url": url })))?;
        Ok(())
    }

    fn script(&self, js: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": js, "args": []})),
        )
    }

    fn element(&self, css: &str) -> Result<String> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        Ok(v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .with_context(|| format!("no element {css}: {v}"))?
            .to_string())
    }

    /// Clears the input `css` and types `text` into it.
    fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let e = self.element(css)?;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(&json!({})))?;
        if !text.is_empty() {
            self.cmd(
                "POST",
                &format!("/element/{e}/value"),
                Some(&json!({ "text": text })),
            )?;
        }
        Ok(())
    }

    fn click(&self, css: &str) -> Result<()> {
        let e = self.element(css)?;
        self.cmd("POST", &format!("/element/{e}/click"), Some(&json!({})))?;
        Ok(())
    }

    /// Polls `js` (a script returning a value) until `ok` holds.
    fn wait_for(&self, js: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = Value::Null;
        for _ in 0..600 {
            last = self.script(js)?;
            if ok(&last) {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the page never satisfied the condition of {js:?}; last: {last}")
    }

    /// The browser's console log entries since the last call.
    fn console(&self) -> Result<Vec<Value>> {
        let v = self.cmd("POST", "/se/log", Some(&json!({"type": "browser"})))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn screenshot(&self, file: &Path) -> Result<()> {
        let v = self.cmd("GET", "/screenshot", None)?;
        let png = base64_decode(v.as_str().context("screenshot is not a string")?)?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.cmd("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// `[[key, value], …]` of the marks matched by `css` (attribute `key` and
/// `data-value`), read from the page.
fn marks(b: &Browser, css: &str, key: &str) -> Vec<(String, f64)> {
    let js = format!(
        "return [...document.querySelectorAll({css:?})].map(r => [r.getAttribute({key:?}), r.getAttribute('data-value')]);"
    );
    let v = b.script(&js).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap_or_default().to_string(),
                p[1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect()
}

#[track_caller]
fn assert_same(what: &str, page: &[(String, f64)], api: &[(String, f64)]) {
    assert!(
        !api.is_empty(),
        "{what}: the API answered nothing to compare"
    );
    assert_eq!(
        page.len(),
        api.len(),
        "{what}: page {page:?} vs API {api:?}"
    );
    for (p, a) in page.iter().zip(api) {
        assert_eq!(p.0, a.0, "{what}: page {page:?} vs API {api:?}");
        assert!(
            (p.1 - a.1).abs() <= 1e-12 * a.1.abs().max(1.0),
            "{what}: {} drawn {} but the API says {}",
            p.0,
            p.1,
            a.1
        );
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// Every number the page drew for `query` (`{"features": …}` or
/// `{"user_id": …}`, `top_n` tokens, item `item_id` for the ITEM target)
/// is the one the API answers to the same request: group bars, both token
/// charts, every heatmap cell (with the token table's labels on its
/// columns), nearest items, lookalikes, and "why this item".
fn assert_page_matches_api(b: &Browser, addr: &str, query: &Value, top_n: u32, item_id: &str) {
    let model = json!({"name": "synth"});
    // The request the page made, with `extra` keys on top.
    let body = |extra: Value| {
        let mut b = json!({"model": model});
        for (k, v) in query
            .as_object()
            .unwrap()
            .iter()
            .chain(extra.as_object().unwrap())
        {
            b[k] = v.clone();
        }
        b
    };
    let call = |path: &str, body: Value| {
        let a = post_json(addr, path, &body, None).unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        a.json().unwrap()
    };
    let explain = |method: &str| {
        call(
            "/v1/explain",
            body(json!({"method": method, "top_n": top_n})),
        )
    };
    // Groups (occlusion).
    let occ = explain("occlusion");
    let api: Vec<(String, f64)> = occ["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_string(), num(&g["value"])))
        .collect();
    assert_same("groups", &marks(b, "#groups rect.bar", "data-group"), &api);
    // Tokens, both methods, by position (the page orders them by position).
    let roll = explain("attention_rollout");
    for (ex, css) in [
        (&occ, "#tokens svg.tokens-occlusion rect.bar"),
        (&roll, "#tokens svg.tokens-rollout rect.bar"),
    ] {
        let mut api: Vec<(String, f64)> = ex["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["token"]["position"].to_string(), num(&t["value"])))
            .collect();
        api.sort_by_key(|(p, _)| p.parse::<u32>().unwrap());
        assert_same(css, &marks(b, css, "data-position"), &api);
    }
    // The heatmap: every layer × (head + mean) × token cell.
    let att = explain("attention");
    let mut api = Vec::new();
    for l in att["layers"].as_array().unwrap() {
        for h in l["heads"].as_array().unwrap() {
            for (p, m) in h["mass"].as_array().unwrap().iter().enumerate() {
                api.push((format!("{}/{}/{p}", l["layer"], h["head"]), num(m)));
            }
        }
        for (p, m) in l["head_mean"].as_array().unwrap().iter().enumerate() {
            api.push((format!("{}/mean/{p}", l["layer"]), num(m)));
        }
    }
    let cells = b
        .script(
            "return [...document.querySelectorAll('#heatmap rect.cell')].map(r => \
             [r.dataset.layer + '/' + r.dataset.head + '/' + r.dataset.position, r.dataset.value]);",
        )
        .unwrap();
    let page: Vec<(String, f64)> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_string(),
                c[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_same("heatmap", &page, &api);
    // Token labels on the heatmap's columns are the token table's.
    let labels = b
        .script("return [...document.querySelectorAll('#heatmap svg text.label title')].map(t => t.textContent);")
        .unwrap();
    for t in att["token_table"].as_array().unwrap() {
        assert!(
            labels.as_array().unwrap().contains(&t["label"]),
            "no column labelled {}",
            t["label"]
        );
    }
    // Nearest items and lookalikes.
    for (target, css) in [
        ("items", "#items rect.bar"),
        ("users", "#lookalikes rect.bar"),
    ] {
        let j = call(
            "/v1/search",
            body(json!({"k": 10, "target": target, "include_attributes": true})),
        );
        let api: Vec<(String, f64)> = j["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["id"].as_str().unwrap().to_string(), num(&h["score"])))
            .collect();
        assert_same(css, &marks(b, css, "data-id"), &api);
    }
    let titles = b
        .script("return document.querySelector('#items table').textContent;")
        .unwrap();
    assert!(titles.as_str().unwrap().contains("Movie "), "{titles}");
    // Why would this user score the item (occlusion, ITEM target).
    let item = call(
        "/v1/explain",
        body(json!({"method": "occlusion", "top_n": top_n,
            "target": {"kind": "item", "item_id": item_id}})),
    );
    let api: Vec<(String, f64)> = item["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_string(), num(&g["value"])))
        .collect();
    assert_same(
        "item groups",
        &marks(b, "#item-why rect.bar[data-group]", "data-group"),
        &api,
    );
    let text = b
        .script("return document.getElementById('item-why').textContent;")
        .unwrap();
    assert!(
        text.as_str()
            .unwrap()
            .contains(&format!("target: item {item_id}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_draws_the_apis_numbers_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program(&["chromium", "chromium-browser"]),
        find_program(&["chromedriver"]),
    ) else {
        panic!(
            "chromium and chromedriver are needed for this test and were not found: \
             run tests/setup-browser (as root: it installs Debian's chromium and chromium-driver)"
        );
    };
    let (_tmp, repo) = synth_repo(11).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__HTTP__ENABLED", "true"),
            ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    let b = Browser::start(&chromium, &chromedriver).unwrap();
    b.goto(&format!("http://{addr}/ui/")).unwrap();
    b.wait_for(
        "return document.querySelectorAll('#model option').length;",
        |v| v.as_u64() == Some(1),
    )
    .unwrap();
    assert_eq!(
        b.script("return document.getElementById('model').value;")
            .unwrap(),
        "synth"
    );

    // 1. An explanation by pasted features, with an ITEM target.
    let features = json!({"fields": {"occupation": "engineer", "age": 31, "gender": "F"},
        "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4},
                   {"item_id": "7", "timestamp": 880000100, "rating": 5},
                   {"item_id": "12", "timestamp": 880000200}]});
    b.type_into("#features", &features.to_string()).unwrap();
    b.type_into("#item", "5").unwrap();
    b.type_into("#top-n", "6").unwrap();
    b.click("#run").unwrap();
    let status = b
        .wait_for(
            "return document.getElementById('status').textContent;",
            |v| v.as_str().is_some_and(|s| s.starts_with("Done")),
        )
        .unwrap();
    let error = b
        .script("return document.getElementById('error').textContent;")
        .unwrap();
    assert_eq!(status, "Done.", "errors on the page: {error}");
    b.screenshot(&repo_root().join("target/ui-explain-features.png"))
        .unwrap();

    assert_page_matches_api(&b, &addr, &json!({"features": features}), 6, "5");

    // Every chart names its method, and attention is never called importance.
    let page = b.script("return document.body.textContent;").unwrap();
    let page = page.as_str().unwrap();
    for m in ["occlusion", "attention rollout", "method: attention"] {
        assert!(page.contains(m), "the page does not name {m:?}");
    }
    assert!(!page.contains("attention importance"));
    // Text alternatives: every chart is an image with a title and a data table.
    let a11y = b
        .script(
            "return [...document.querySelectorAll('svg.chart')].map(s => \
             [s.getAttribute('role'), s.querySelector('title') !== null, \
              s.closest('figure').querySelector('table') !== null]);",
        )
        .unwrap();
    assert!(a11y.as_array().unwrap().len() >= 6, "{a11y}");
    for c in a11y.as_array().unwrap() {
        assert_eq!(c, &json!(["img", true, true]));
    }

    // 2. By the id of a users index user without live state: nearest items
    // and lookalikes of the stored profile; the explanation panels say why
    // they need the user's events and fields (and no call failed: the page
    // asked Embed where the profile comes from before explaining).
    let model = json!({"name": "synth"});
    b.type_into("#features", "").unwrap();
    b.type_into("#user-id", "u3").unwrap();
    b.click("#run").unwrap();
    let status = b
        .wait_for(
            "return document.getElementById('status').textContent;",
            |v| v.as_str().is_some_and(|s| s.starts_with("Done")),
        )
        .unwrap();
    assert_eq!(status, "Done.");
    for (target, css) in [
        ("items", "#items rect.bar"),
        ("users", "#lookalikes rect.bar"),
    ] {
        let a = post_json(
            &addr,
            "/v1/search",
            &json!({"model": model, "user_id": "u3", "k": 10, "target": target,
                "include_attributes": true}),
            None,
        )
        .unwrap();
        let j = a.json().unwrap();
        let api: Vec<(String, f64)> = j["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["id"].as_str().unwrap().to_string(), num(&h["score"])))
            .collect();
        assert_same(css, &marks(&b, css, "data-id"), &api);
    }
    let groups = b
        .script("return document.getElementById('groups').textContent;")
        .unwrap();
    assert!(
        groups
            .as_str()
            .unwrap()
            .contains("Explanations need the user's events and fields: user u3 has no live state"),
        "{groups}"
    );
    let subject = b
        .script("return document.getElementById('subject').textContent;")
        .unwrap();
    assert!(
        subject
            .as_str()
            .unwrap()
            .starts_with("User u3: no live state"),
        "{subject}"
    );
    assert_eq!(
        b.script(
            "return document.querySelectorAll('#groups rect.bar, #heatmap rect.cell').length;"
        )
        .unwrap(),
        0
    );
    b.screenshot(&repo_root().join("target/ui-user-id.png"))
        .unwrap();

    // 3. A user tracked over HTTP just now, explained by id from the live
    // state: every number drawn is the API's for the same by-id request,
    // and the token table is the tracked events and fields.
    let tracked = post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "viewer-7",
            "events": [{"item_id": "4", "timestamp": 1700000000, "rating": 5.0, "event_id": "v1"},
                       {"item_id": "9", "timestamp": 1700000100, "event_id": "v2"},
                       {"item_id": "15", "timestamp": 1700000200, "rating": 2.0, "event_id": "v3"}],
            "fields": [{"name": "occupation", "set": "writer"}, {"name": "age", "set": 45},
                       {"name": "gender", "set": "M"}]}]}),
        None,
    )
    .unwrap();
    assert_eq!(tracked.status, 200, "{}", tracked.text());
    assert_eq!(tracked.json().unwrap()["users"][0]["stored"], 3);
    b.type_into("#user-id", "viewer-7").unwrap();
    b.type_into("#item", "6").unwrap();
    b.type_into("#top-n", "5").unwrap();
    b.click("#run").unwrap();
    let status = b
        .wait_for(
            "return document.getElementById('status').textContent;",
            |v| v.as_str().is_some_and(|s| s.starts_with("Done")),
        )
        .unwrap();
    let error = b
        .script("return document.getElementById('error').textContent;")
        .unwrap();
    assert_eq!(status, "Done.", "errors on the page: {error}");
    let subject = b
        .script("return document.getElementById('subject').textContent;")
        .unwrap();
    assert!(
        subject
            .as_str()
            .unwrap()
            .starts_with("User viewer-7: live state"),
        "{subject}"
    );
    assert_page_matches_api(&b, &addr, &json!({"user_id": "viewer-7"}), 5, "6");
    let att = post_json(
        &addr,
        "/v1/explain",
        &json!({"model": model, "user_id": "viewer-7", "method": "attention"}),
        None,
    )
    .unwrap()
    .json()
    .unwrap();
    let items: Vec<&str> = att["token_table"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["item_id"].as_str().filter(|s| !s.is_empty()))
        .collect();
    assert_eq!(items, ["4", "9", "15"], "the tracked events");
    let labels = b
        .script("return [...document.querySelectorAll('#heatmap svg text.label title')].map(t => t.textContent);")
        .unwrap();
    assert!(
        labels.as_array().unwrap().iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("occupation = writer"))),
        "{labels}"
    );
    b.screenshot(&repo_root().join("target/ui-tracked-user.png"))
        .unwrap();

    // 3b. The run put a link to itself in the address bar; opening that
    // link in a fresh page fills the form and runs the same explanation.
    let link = b.script("return window.location.href;").unwrap();
    let link = link.as_str().unwrap().to_owned();
    assert!(
        link.contains("user_id=viewer-7") && link.contains("item=6") && link.contains("top_n=5"),
        "{link}"
    );
    b.goto(&link).unwrap();
    let status = b
        .wait_for(
            "return document.getElementById('status').textContent;",
            |v| v.as_str().is_some_and(|s| s.starts_with("Done")),
        )
        .unwrap();
    assert_eq!(status, "Done.");
    assert_eq!(
        b.script("return document.getElementById('user-id').value;")
            .unwrap(),
        "viewer-7"
    );
    assert_page_matches_api(&b, &addr, &json!({"user_id": "viewer-7"}), 5, "6");

    // 4. The console stayed clean all along.
    let log = b.console().unwrap();
    let errors: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    // ... and the check sees an error when there is one.
    b.script("console.error('probe: a console error'); return null;")
        .unwrap();
    let log = b.console().unwrap();
    assert!(
        log.iter().any(|e| e["level"] == "SEVERE"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("probe: a console error"))),
        "the console log missed an error: {log:?}"
    );
}
