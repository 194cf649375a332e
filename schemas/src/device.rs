//! The device class label: one of four values, from the beacon or from request headers.

use serde::{Deserialize, Serialize};

/// The bounded `device` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// Phones.
    Mobile,
    /// Laptops and desktops.
    Desktop,
    /// Tablets.
    Tablet,
    /// Nothing told us.
    Unknown,
}

impl Device {
    /// Every value.
    pub const ALL: [Device; 4] = [
        Device::Mobile,
        Device::Desktop,
        Device::Tablet,
        Device::Unknown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Desktop => "desktop",
            Device::Tablet => "tablet",
            Device::Unknown => "unknown",
        }
    }

    /// Parses a device hint sent by the collector; anything else is `None`.
    pub fn parse(hint: &str) -> Option<Device> {
        Device::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(hint.trim()))
    }

    /// Classifies from the `Sec-CH-UA-Mobile` client hint (`?1` or `?0`) and the User-Agent.
    /// The User-Agent wins when it names a tablet, since the hint says only mobile or not.
    pub fn from_headers(ch_ua_mobile: Option<&str>, user_agent: Option<&str>) -> Device {
        let from_ua = user_agent.map(Device::from_user_agent);
        if from_ua == Some(Device::Tablet) {
            return Device::Tablet;
        }
        match ch_ua_mobile.map(str::trim) {
            Some("?1") => Device::Mobile,
            Some("?0") => Device::Desktop,
            _ => from_ua.unwrap_or(Device::Unknown),
        }
    }

    /// Classifies a User-Agent string.
    pub fn from_user_agent(ua: &str) -> Device {
        let has = |needle: &str| ua.contains(needle);
        if has("iPad")
            || has("Tablet")
            || has("Kindle")
            || has("Silk/")
            || (has("Android") && !has("Mobile"))
        {
            Device::Tablet
        } else if has("Mobi") || has("iPhone") || has("iPod") || has("Android") || has("Opera Mini")
        {
            Device::Mobile
        } else if has("Windows") || has("Macintosh") || has("X11") || has("Linux") || has("CrOS") {
            Device::Desktop
        } else {
            Device::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
    const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

    #[test]
    fn classifies_user_agents() {
        assert_eq!(Device::from_user_agent(IPHONE), Device::Mobile);
        assert_eq!(Device::from_user_agent(IPAD), Device::Tablet);
        assert_eq!(Device::from_user_agent(ANDROID_PHONE), Device::Mobile);
        assert_eq!(Device::from_user_agent(ANDROID_TABLET), Device::Tablet);
        assert_eq!(Device::from_user_agent(WINDOWS), Device::Desktop);
        assert_eq!(Device::from_user_agent("curl/8.0"), Device::Unknown);
    }

    #[test]
    fn client_hint_decides_mobile_unless_the_agent_is_a_tablet() {
        assert_eq!(
            Device::from_headers(Some("?1"), Some(WINDOWS)),
            Device::Mobile
        );
        assert_eq!(
            Device::from_headers(Some("?0"), Some(IPHONE)),
            Device::Desktop
        );
        assert_eq!(Device::from_headers(Some("?1"), Some(IPAD)), Device::Tablet);
        assert_eq!(Device::from_headers(None, None), Device::Unknown);
    }

    #[test]
    fn parses_hints_case_insensitively_and_rejects_others() {
        assert_eq!(Device::parse("Mobile"), Some(Device::Mobile));
        assert_eq!(Device::parse("phone"), None);
    }
}
