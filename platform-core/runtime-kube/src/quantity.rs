//! Kubernetes resource quantities (`250m`, `1.5`, `128Mi`, `1G`, `1e9`, `2500000n`)
//! in the units the platform counts: millicores and MiB.

/// The value in base units (cores or bytes), or `None` when it is not a quantity.
fn value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    let v = n * factor;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// CPU in millicores, rounded up.
pub fn cpu_millis(q: &str) -> Option<u32> {
    let millis = (value(q)? * 1000.0).ceil();
    Some(if millis > f64::from(u32::MAX) {
        u32::MAX
    } else {
        millis as u32
    })
}

/// Memory in MiB, rounded up.
pub fn memory_mib(q: &str) -> Option<u32> {
    let mib = (value(q)? / (1024.0 * 1024.0)).ceil();
    Some(if mib > f64::from(u32::MAX) {
        u32::MAX
    } else {
        mib as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_in_every_notation() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("2500000n"), Some(3));
        assert_eq!(cpu_millis("15u"), Some(1));
        assert_eq!(memory_mib("128Mi"), Some(128));
        assert_eq!(memory_mib("1Gi"), Some(1024));
        assert_eq!(memory_mib("16393784Ki"), Some(16010));
        assert_eq!(memory_mib("1e9"), Some(954));
        assert_eq!(memory_mib("500M"), Some(477));
        assert_eq!(memory_mib("12x"), None);
        assert_eq!(cpu_millis("-1"), None);
        assert_eq!(cpu_millis(""), None);
    }
}
