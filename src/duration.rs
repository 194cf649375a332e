//! Durations on the command line: seconds, or a number with `s`, `m`, `h` or `d`.

/// Parses `1800`, `30m`, `24h`, `7d` into seconds; `0` is allowed, more than 100 years is not.
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 1800, 30m, 24h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    n.checked_mul(factor)
        .filter(|&secs| secs <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Like [`parse_secs`], but 0 is refused.
pub fn parse_positive_secs(text: &str) -> Result<u64, String> {
    match parse_secs(text)? {
        0 => Err(format!("`{text}` must be longer than 0")),
        secs => Ok(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_garbage() {
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("30m"), Ok(1800));
        assert_eq!(parse_secs("24h"), Ok(86_400));
        assert_eq!(parse_secs("1d"), Ok(86_400));
        assert_eq!(parse_secs("0"), Ok(0));
        assert!(parse_secs("m").is_err());
        assert!(parse_secs("5w").is_err());
        assert!(parse_secs("-5m").is_err());
        assert!(parse_secs("99999999999d").is_err());
        assert!(parse_positive_secs("0").is_err());
        assert_eq!(parse_positive_secs("2h"), Ok(7200));
    }
}
