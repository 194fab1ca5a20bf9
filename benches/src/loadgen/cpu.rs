//! CPU time of a process from `/proc/<pid>/stat` (user + system time of all
//! its threads, the same figures `getrusage` reports), in seconds.

/// Clock ticks per second of `/proc/*/stat` (`sysconf(_SC_CLK_TCK)`, 100 on
/// every Linux configuration in use).
const CLK_TCK: f64 = 100.0;

/// User and system CPU seconds of process `pid` (this process when `None`).
pub fn cpu_seconds(pid: Option<u32>) -> Option<(f64, f64)> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / CLK_TCK, stime / CLK_TCK))
}

/// Total (user + system) CPU seconds of `pid` (this process when `None`).
pub fn total_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    cpu_seconds(pid).map(|(u, s)| u + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let a = total_cpu_seconds(None).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = total_cpu_seconds(None).unwrap();
        assert!(b >= a);
        assert!(
            b - a > 0.0,
            "100 ms of spinning took no CPU time? {a} -> {b}"
        );
    }
}
