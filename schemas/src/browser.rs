//! The browser family and major version, read by the ingest from the `User-Agent` header: a small,
//! bounded set of labels (CrUX-style), never the raw header.
//!
//! **How.** A table of product tokens, tried in order on the first [`MAX_USER_AGENT_SCAN`] bytes
//! of the header (a browser's tokens sit well within them; a longer header costs no more): Edge
//! (`Edg/`, `EdgA/`, and `Edge/` of the old EdgeHTML Edge), Samsung Internet (`SamsungBrowser/`),
//! Opera (`OPR/`), Chrome (`Chrome/`), Firefox (`Firefox/`), Safari (`Version/` with `Safari/`). The
//! order matters: each browser also names the ones it descends from (Edge, Samsung and Opera say
//! `Chrome/ ... Safari/`, Chrome says `Safari/`), so the most specific token is tried first. The
//! major version is the number right after the token (Safari: after `Version/`); above
//! [`MAX_BROWSER_MAJOR`], or not a number, it is 0 (unknown). Other Chromium browsers that keep
//! Chrome's token (Brave, Vivaldi, Yandex, Android WebView, in-app browsers on Android) are `chrome`
//! with their Chromium version: the engine and its version are what a page's timings depend on.
//!
//! **iOS and iPadOS.** Every browser there runs the system's WebKit (Apple's rule), so Chrome
//! (`CriOS/`), Firefox (`FxiOS/`), Edge (`EdgiOS/`), Opera (`OPiOS/`, `OPT/`) and in-app browsers
//! on an iPhone, iPad or iPod are `safari`: their own version numbers say nothing of the engine that
//! rendered the page and measured it (which metrics exist at all is WebKit's: LCP and INP only
//! since WebKit 26), and counting them as `chrome` would mix WebKit's timings into Chromium's
//! percentiles. Their major is the iOS version, which is WebKit's major, read from `OS 17_4`;
//! since iOS 26 the UA says `18_6` or `18_7` whatever the iOS version, so 18.6 and later read as 0
//! (unknown). Safari itself says `Version/26.0`, which is kept as sent. What is lost: how many iOS
//! users chose Chrome rather than Safari (a product question, not a performance one).
//!
//! **Why a table and not a crate.** The full parsers (`uaparser`, on ua-parser's several hundred
//! regular expressions; `woothee`, on its own dataset) answer questions `rum` does not ask (OS,
//! device models, hundreds of products) at a per-request cost of tens of microseconds and a
//! start-up cost of compiling their patterns, and their families would have to be mapped onto
//! these eight anyway. Here: about fifteen substring searches over at most 512 bytes, no allocation, nothing
//! to load, every rule pinned by the table of real User-Agent strings in the tests.

/// The families kept; a browser outside them is `other`, a missing or unreadable header `unknown`.
pub const BROWSER_FAMILIES: [&str; 8] = [
    "chrome", "edge", "firefox", "safari", "samsung", "opera", "other", "unknown",
];

/// The family of a message without one (and of an unreadable `User-Agent`).
pub const BROWSER_UNKNOWN: &str = "unknown";

/// The family of a `User-Agent` that names none of the kept families.
pub const BROWSER_OTHER: &str = "other";

/// The highest major version kept; a larger one is read as unknown (0).
pub const MAX_BROWSER_MAJOR: u16 = 999;

/// The bytes of a `User-Agent` read: the tokens of every kept browser come well before.
pub const MAX_USER_AGENT_SCAN: usize = 512;

/// True for one of [`BROWSER_FAMILIES`].
pub fn is_browser_family(family: &str) -> bool {
    BROWSER_FAMILIES.contains(&family)
}

/// A browser family and its major version, as the message carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Browser {
    /// One of [`BROWSER_FAMILIES`].
    pub family: &'static str,
    /// 1 to [`MAX_BROWSER_MAJOR`]; 0 when unknown.
    pub major: u16,
}

impl Browser {
    /// No `User-Agent`, or nothing readable in it.
    pub const UNKNOWN: Browser = Browser {
        family: BROWSER_UNKNOWN,
        major: 0,
    };

    /// Classifies a `User-Agent` header's bytes (not necessarily UTF-8); `None` is no header.
    pub fn from_user_agent(user_agent: Option<&[u8]>) -> Browser {
        let Some(ua) = user_agent else {
            return Browser::UNKNOWN;
        };
        let cut = ua.len() > MAX_USER_AGENT_SCAN;
        let ua = &ua[..ua.len().min(MAX_USER_AGENT_SCAN)];
        // A number that runs to the end of a cut header may be cut itself: unknown.
        let major_after = |token: &[u8]| {
            let at = find(ua, token)? + token.len();
            match number(&ua[at..]) {
                (Some(_), digits) if cut && at + digits == ua.len() => Some(0),
                (major, _) => major,
            }
        };
        if !ua.iter().any(u8::is_ascii_alphanumeric) {
            return Browser::UNKNOWN;
        }
        if is_ios(ua) {
            let major = major_after(b"Version/").unwrap_or_else(|| ios_webkit_major(ua));
            return Browser::new("safari", major);
        }
        // Most specific first: each browser also carries the tokens of those it descends from.
        const TOKENS: [(&[u8], &str); 7] = [
            (b"Edg/", "edge"),
            (b"EdgA/", "edge"),
            (b"Edge/", "edge"),
            (b"SamsungBrowser/", "samsung"),
            (b"OPR/", "opera"),
            (b"Chrome/", "chrome"),
            (b"Firefox/", "firefox"),
        ];
        for (token, family) in TOKENS {
            if find(ua, token).is_some() {
                return Browser::new(family, major_after(token).unwrap_or(0));
            }
        }
        // Android's old stock browser says `Version/4.0 ... Safari/` too: it is not Safari.
        if find(ua, b"Safari/").is_some() && find(ua, b"Android").is_none() {
            if let Some(major) = major_after(b"Version/") {
                return Browser::new("safari", major);
            }
        }
        Browser::new(BROWSER_OTHER, 0)
    }

    fn new(family: &'static str, major: u16) -> Browser {
        let major = if major > MAX_BROWSER_MAJOR { 0 } else { major };
        Browser { family, major }
    }
}

/// An iPhone, iPad or iPod, or a browser that exists only on iOS (iPadOS in desktop mode says
/// `Macintosh`: its Safari is read by `Version/`, its Chrome by `CriOS/`).
fn is_ios(ua: &[u8]) -> bool {
    let device = [&b"iPhone"[..], b"iPad", b"iPod"]
        .iter()
        .any(|d| find(ua, d).is_some());
    let ios_browser = [&b"CriOS/"[..], b"FxiOS/", b"EdgiOS/", b"OPiOS/"]
        .iter()
        .any(|t| find(ua, t).is_some());
    ios_browser || (device && find(ua, b"AppleWebKit/").is_some())
}

/// WebKit's major on iOS from `OS 17_4_1` (WebKit's major is iOS's); 0 from 18.6 on, where the UA
/// stopped telling the iOS version (iOS 26 and later say 18_6 or 18_7).
fn ios_webkit_major(ua: &[u8]) -> u16 {
    let Some(at) = find(ua, b"OS ") else {
        return 0;
    };
    let rest = &ua[at + 3..];
    let (major, used) = number(rest);
    let minor = match rest.get(used) {
        Some(b'_') => number(&rest[used + 1..]).0.unwrap_or(0),
        _ => 0,
    };
    match major {
        Some(major) if (major, minor) < (18, 6) => major,
        _ => 0,
    }
}

/// The leading decimal number of `bytes` and the digits read; a number above
/// [`MAX_BROWSER_MAJOR`] is `u16::MAX` (read as unknown).
fn number(bytes: &[u8]) -> (Option<u16>, usize) {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return (None, 0);
    }
    let mut n: u32 = 0;
    for b in &bytes[..digits] {
        n = (n * 10 + u32::from(b - b'0')).min(u32::from(u16::MAX));
    }
    (Some(n as u16), digits)
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real User-Agent strings, as browsers sent them, and what they are read as.
    const TABLE: &[(&str, &str, u16)] = &[
        // Desktop.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", "chrome", 120),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "chrome", 131),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36", "chrome", 119),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36", "chrome", 121),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", "edge", 120),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045", "edge", 18),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0", "opera", 106),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", "firefox", 121),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0", "firefox", 115),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2.1 Safari/605.1.15", "safari", 17),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Safari/605.1.15", "safari", 26),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 YaBrowser/24.1.0.0 Safari/537.36", "chrome", 120),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Vivaldi/6.5.3206.53", "chrome", 120),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", "other", 0),
        // Android.
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36", "chrome", 120),
        ("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36", "samsung", 23),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 EdgA/120.0.2210.115", "edge", 120),
        ("Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 OPR/79.3.4185.76966", "opera", 79),
        ("Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0", "firefox", 121),
        ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.5993.111 Mobile Safari/537.36", "chrome", 118),
        ("Mozilla/5.0 (Linux; U; Android 4.4.2; en-us; SCH-I535 Build/KOT49H) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30", "other", 0),
        ("Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119 Version/11.1010", "other", 0),
        // iOS and iPadOS: every browser is WebKit, with WebKit's (iOS's) major.
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1", "safari", 17),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1", "safari", 26),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", "safari", 17),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 16_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15", "safari", 16),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/120.2210.126 Mobile/15E148 Safari/605.1.15", "safari", 17),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/140.0.7339.122 Mobile/15E148 Safari/604.1", "safari", 0),
        ("Mozilla/5.0 (iPad; CPU OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", "safari", 17),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/21B91 [FBAN/FBIOS;FBAV/443.0.0.32.118]", "safari", 17),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Safari/604.1", "safari", 0),
        // Garbage, empty, huge majors.
        ("curl/8.5.0", "other", 0),
        ("garbage", "other", 0),
        ("Chrome/", "chrome", 0),
        ("Chrome/x120", "chrome", 0),
        ("Mozilla/5.0 Chrome/1000.0", "chrome", 0),
        ("Mozilla/5.0 Chrome/999.1", "chrome", 999),
        ("Mozilla/5.0 Firefox/99999999999999999999999999999999", "firefox", 0),
        ("Mozilla/5.0 Safari/605.1.15", "other", 0),
        ("", "unknown", 0),
        ("   ", "unknown", 0),
        ("-/-;()", "unknown", 0),
    ];

    #[test]
    fn reads_family_and_major_of_real_user_agents() {
        for (ua, family, major) in TABLE {
            let got = Browser::from_user_agent(Some(ua.as_bytes()));
            assert_eq!((got.family, got.major), (*family, *major), "{ua}");
            assert!(is_browser_family(got.family));
        }
        assert_eq!(Browser::from_user_agent(None), Browser::UNKNOWN);
    }

    #[test]
    fn reads_bytes_that_are_not_utf8_and_only_the_first_512() {
        let mut ua = b"Mozilla/5.0 \xff\xfe (Windows) Firefox/120.0".to_vec();
        assert_eq!(
            Browser::from_user_agent(Some(&ua)),
            Browser {
                family: "firefox",
                major: 120
            }
        );
        ua = vec![b'x'; MAX_USER_AGENT_SCAN - 10];
        ua.extend_from_slice(b"Firefox/120.0");
        let cut = Browser::from_user_agent(Some(&ua));
        assert_eq!(
            (cut.family, cut.major),
            ("firefox", 0),
            "12 of 120 is not read as 12"
        );
        ua.truncate(MAX_USER_AGENT_SCAN);
        let whole = Browser::from_user_agent(Some(&ua));
        assert_eq!(
            (whole.family, whole.major),
            ("firefox", 12),
            "a header of 512 bytes is whole"
        );
        ua = vec![b'x'; MAX_USER_AGENT_SCAN];
        ua.extend_from_slice(b" Chrome/120");
        assert_eq!(Browser::from_user_agent(Some(&ua)).family, "other");
        let huge = vec![b'C'; 1 << 20];
        assert_eq!(Browser::from_user_agent(Some(&huge)).family, "other");
    }
}
