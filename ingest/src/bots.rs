//! Bots, crawlers, synthetic monitors and automated browsers, by User-Agent: their page loads are
//! not real users, so their beacons are dropped (counted as `bot`).
//!
//! The patterns are those of the `isbot` npm package 5.2.3 (Unlicense, public domain; a well-kept
//! list built on the `crawler-user-agents` list and tested against real browsers), vendored as
//! `isbot-patterns.json` beside this file: matched case-insensitively, any one is a bot. It marks
//! headless and driven browsers (HeadlessChrome, PhantomJS, Playwright, Selenium, Cypress) as
//! bots: end-to-end tests that want their beacons counted send a real browser's User-Agent.
//!
//! Six of its patterns use look-around, which the `regex` crate does not have (it runs in linear
//! time, so a hostile 16 KiB User-Agent costs no more than it is long): they are
//! [`GUARDED`], each a plain pattern with the text that must not stand just before or after a
//! match. A new look-around pattern in an updated list fails the tests until it is added there.
//! [`EXTRA`] adds monitors the list misses.
//!
//! On the pinned public lists in `ingest/testdata/` (see its README): every crawler example but a
//! few in-app and desktop-app browsers is caught, and no real browser is.

use std::sync::LazyLock;

use regex::bytes::{Regex, RegexBuilder};

/// The vendored `isbot` pattern list.
const ISBOT_PATTERNS: &str = include_str!("isbot-patterns.json");

/// A look-around pattern of the list, as a plain pattern and the context that rules a match out.
struct Guarded {
    /// The pattern as the list writes it.
    original: &'static str,
    /// The same without its look-around.
    plain: &'static str,
    /// Texts that must not end just before a match (negative look-behind).
    not_after: &'static [&'static str],
    /// Texts that must not start just after a match (negative look-ahead).
    not_before: &'static [&'static str],
}

const GUARDED: [Guarded; 6] = [
    Guarded {
        original: "(?:^|[^g])news(?!sapphire)",
        plain: "news",
        not_after: &["g"],
        not_before: &["sapphire"],
    },
    Guarded {
        original: "(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))",
        plain: "google",
        not_after: &[" channel/", "google/"],
        not_before: &["wv", "app", "/google", " pixel"],
    },
    Guarded {
        original: "(?<! cu)bots?(?:\\b|_)",
        plain: "bots?(?:\\b|_)",
        not_after: &[" cu"],
        not_before: &[],
    },
    Guarded {
        original: "(?<!cam)scan",
        plain: "scan",
        not_after: &["cam"],
        not_before: &[],
    },
    Guarded {
        original: "(?<!lib)http",
        plain: "http",
        not_after: &["lib"],
        not_before: &[],
    },
    Guarded {
        original: "java(?!;)",
        plain: "java",
        not_after: &[],
        not_before: &[";"],
    },
];

/// Monitors and crawlers the list misses (lower case, plain patterns).
const EXTRA: [&str; 7] = [
    "slurp", // Yahoo! Slurp
    "facebookexternalhit",
    "lighthouse",
    "gtmetrix",
    "miniature\\.io",
    "\\bylt\\b", // Yellow Lab Tools
    "turingos",
];

struct Matcher {
    plain: Regex,
    guarded: Vec<(Regex, &'static Guarded)>,
}

fn build(pattern: &str) -> Regex {
    // ASCII classes as in JavaScript (`\w`, `\b`, `\d`); the input is bytes, ASCII lower-cased.
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(16 << 20)
        .build()
        .unwrap_or_else(|e| panic!("bot pattern `{pattern}`: {e}"))
}

static MATCHER: LazyLock<Matcher> = LazyLock::new(|| {
    let list: Vec<String> =
        serde_json::from_str(ISBOT_PATTERNS).expect("isbot-patterns.json is a list of strings");
    let plain: Vec<String> = list
        .iter()
        .filter(|p| !GUARDED.iter().any(|g| g.original == p.as_str()))
        .map(|p| format!("(?:{})", js_class_dashes(p)))
        .chain(EXTRA.iter().map(|p| format!("(?:{p})")))
        .collect();
    Matcher {
        plain: build(&plain.join("|")),
        guarded: GUARDED.iter().map(|g| (build(g.plain), g)).collect(),
    }
});

/// JavaScript reads `-` after a class escape inside `[...]` (`[\w\d-.]`) as a literal; Rust's
/// `regex` refuses it: escape it.
fn js_class_dashes(pattern: &str) -> String {
    pattern.replace("\\d-.", "\\d\\-.")
}

/// The bytes of a User-Agent that are matched: real browsers' are shorter (the longest of the
/// pinned lists of `ingest/testdata/` is 268 bytes, of their crawler examples 285), and matching
/// costs about the length matched (a whole 16 KiB random-letter User-Agent took ~240 µs).
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// True when the User-Agent names a bot, a crawler, a synthetic monitor or an automated browser.
///
/// On the header's bytes as they came (a User-Agent that is not ASCII is still matched: a crawler
/// cannot slip by with one `é`), its first [`MAX_USER_AGENT_BYTES`] only.
pub fn is_bot(user_agent: impl AsRef<[u8]>) -> bool {
    let ua = user_agent.as_ref();
    let ua = ua[..ua.len().min(MAX_USER_AGENT_BYTES)].to_ascii_lowercase();
    let ua = ua.as_slice();
    let matcher = &*MATCHER;
    matcher.plain.is_match(ua)
        || matcher.guarded.iter().any(|(regex, guard)| {
            regex.find_iter(ua).any(|m| {
                let before = &ua[..m.start()];
                let after = &ua[m.end()..];
                !guard
                    .not_after
                    .iter()
                    .any(|t| before.ends_with(t.as_bytes()))
                    && !guard
                        .not_before
                        .iter()
                        .any(|t| after.starts_with(t.as_bytes()))
            })
        })
}

/// Forces the patterns' compilation (at start, not on the first beacon).
pub fn warm_up() {
    LazyLock::force(&MATCHER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_every_pattern_and_guards_every_look_around() {
        warm_up();
        let list: Vec<String> = serde_json::from_str(ISBOT_PATTERNS).unwrap();
        for pattern in &list {
            let looks_around = ["(?<", "(?=", "(?!"].iter().any(|l| pattern.contains(l));
            if looks_around {
                assert!(
                    GUARDED.iter().any(|g| g.original == pattern.as_str()),
                    "a look-around pattern without its guarded form: {pattern}"
                );
            }
        }
        for g in &GUARDED {
            assert!(
                list.iter().any(|p| p == g.original),
                "a guarded pattern the list no longer has: {}",
                g.original
            );
        }
    }

    #[test]
    fn recognizes_crawlers_monitors_and_automated_browsers() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (compatible; YandexSpider/3.0)",
            "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0 Safari/537.36",
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/117.0.0.0 Safari/537.36 GTmetrix",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "Java/17.0.2",
            "Mozilla/5.0 (compatible; Google-Site-Verification/1.0)",
            "Mozilla/5.0 (Windows NT 10.0) AdsBot-Google (+http://www.google.com/adsbot.html)",
        ] {
            assert!(is_bot(ua), "{ua}");
        }
    }

    /// The pinned public lists of `ingest/testdata/` (see its README).
    fn testdata<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
    }

    #[test]
    fn catches_the_public_crawler_examples_and_no_real_browser() {
        #[derive(serde::Deserialize)]
        struct Crawler {
            instances: Vec<String>,
        }
        let crawlers: Vec<Crawler> = testdata("crawler-user-agents-1.60.0.json");
        let examples: Vec<String> = crawlers.into_iter().flat_map(|c| c.instances).collect();
        let missed: Vec<&String> = examples.iter().filter(|ua| !is_bot(ua)).collect();
        // Left through on purpose: people browsing in Instagram's and Facebook's in-app browsers,
        // in VS Code and Trae (Electron editors) and in Fluid (a site-specific browser).
        let people = [
            "Instagram 406",
            "MetaIAB Facebook",
            "Code/1.115",
            "Trae/1.107",
            "Fluid/0.9",
        ];
        for ua in &missed {
            assert!(
                people.iter().any(|p| ua.contains(p)),
                "a crawler example got through: {ua}"
            );
        }
        println!(
            "crawler-user-agents 1.60.0: {} of {} examples caught",
            examples.len() - missed.len(),
            examples.len()
        );
        assert_eq!(examples.len(), 2_118);
        assert_eq!(missed.len(), people.len());

        let mut browsers: Vec<String> = testdata("user-agents-2.1.198.json");
        browsers.extend(testdata::<Vec<String>>("top-user-agents-2.1.138.json"));
        browsers.sort();
        browsers.dedup();
        let dropped: Vec<&String> = browsers.iter().filter(|ua| is_bot(ua)).collect();
        println!(
            "user-agents 2.1.198 and top-user-agents 2.1.138: {} of {} browsers dropped",
            dropped.len(),
            browsers.len()
        );
        assert_eq!(browsers.len(), 981);
        assert!(dropped.is_empty(), "real browsers dropped: {dropped:#?}");
    }

    #[test]
    fn matches_bytes_that_are_not_ascii_and_only_a_bounded_prefix() {
        let mut ua =
            b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) ".to_vec();
        ua.extend_from_slice("é".as_bytes());
        assert!(is_bot(&ua), "UTF-8 after the marker");
        let mut ua = vec![0xe9, 0xff];
        ua.extend_from_slice(b" Mozilla/5.0 (compatible; bingbot/2.0)");
        assert!(is_bot(&ua), "bytes that are not UTF-8 before the marker");
        assert!(!is_bot(
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 é"
        ));
        // Only the first MAX_USER_AGENT_BYTES are read: a marker beyond them is not seen (no real
        // browser's User-Agent is that long), and a 16 KiB one costs no more than 512 bytes.
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        let mut long = chrome.to_owned();
        while long.len() < MAX_USER_AGENT_BYTES {
            long.push_str(" (KHTML, like Gecko)");
        }
        long.push_str(" Googlebot/2.1");
        assert!(!is_bot(&long));
        assert!(is_bot(format!("{chrome} Googlebot/2.1")));
    }

    #[test]
    fn lets_browsers_through_including_the_look_around_exceptions() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X)",
            // `google` followed by `app`, `wv`, ` pixel`; `cubot` phones; `libhttp`; `java;`.
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/289.0 Mobile/15E148 Safari/604.1 googleapp",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UD1A; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0 Mobile Safari/537.36 google pixel",
            "Mozilla/5.0 (Linux; Android 10; CUBOT KINGKONG 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 9; Camscanner) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        ] {
            assert!(!is_bot(ua), "{ua}");
        }
    }
}
