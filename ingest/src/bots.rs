//! Known bots, crawlers and synthetic monitors, by User-Agent. Their page loads are not real users.
//!
//! Headless Chrome is not on the list: real-browser end-to-end tests use it on purpose.

/// Lower-case fragments of User-Agents that never belong to a person.
const BOT_MARKERS: [&str; 20] = [
    "bot", // googlebot, bingbot, applebot, ahrefsbot, ... and "bot/" in general
    "crawler",
    "spider",
    "slurp",
    "facebookexternalhit",
    "mediapartners-google",
    "adsbot",
    "bingpreview",
    "chrome-lighthouse",
    "lighthouse",
    "pagespeed",
    "gtmetrix",
    "pingdom",
    "uptimerobot",
    "statuscake",
    "site24x7",
    "datadogsynthetics",
    "newrelicsynthetics",
    "catchpoint",
    "phantomjs",
];

/// True when the User-Agent names a bot or a synthetic monitor.
pub fn is_bot(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    BOT_MARKERS.iter().any(|m| ua.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_crawlers_and_monitors() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (compatible; YandexSpider/3.0)",
            "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        ] {
            assert!(is_bot(ua), "{ua}");
        }
    }

    #[test]
    fn lets_browsers_and_headless_chrome_through() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0 Safari/537.36",
            "curl/8.5.0",
        ] {
            assert!(!is_bot(ua), "{ua}");
        }
    }
}
