//! Phone numbers: normalising what people and URIs carry (`tel:+1 425 555-0101`,
//! `sip:+14255550101@pbx;user=phone`, `(425) 555-0101`) to plain digits with an optional
//! leading `+`, prefix matching, and the number URIs sent toward the PBX. Not here: which
//! number a call uses (see `origination`).

/// Visual separators people type inside numbers (RFC 3966 allows `-`, `.`, `(`, `)`).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')')
}

/// The user part of a `sip:`/`sips:`/`tel:` URI without its parameters (`;user=phone`,
/// `;phone-context=...`), or the whole string when it is not such a URI. A name-addr
/// (`"Bob" <sip:..>`) is reduced to its URI first.
pub fn uri_user(uri: &str) -> &str {
    let uri = match (uri.find('<'), uri.rfind('>')) {
        (Some(open), Some(close)) if open < close => &uri[open + 1..close],
        _ => uri,
    };
    let uri = uri.trim();
    let rest = strip_scheme(uri).unwrap_or(uri);
    let user = match rest.find('@') {
        Some(at) => &rest[..at],
        None => rest,
    };
    match user.find([';', '?']) {
        Some(end) => &user[..end],
        None => user,
    }
}

/// The part after `sip:`, `sips:` or `tel:` (case-insensitive), `None` for other strings.
fn strip_scheme(uri: &str) -> Option<&str> {
    let colon = uri.find(':')?;
    let scheme = &uri[..colon];
    ["sip", "sips", "tel"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
        .then(|| &uri[colon + 1..])
}

/// Normalise `text` (a bare number or a number URI) to digits with an optional leading
/// `+`; `None` when it is not a phone number. `allow_codes` also admits `*` and `#` (and
/// their `%2A`/`%23` escapes), for dialled feature codes.
fn normalise(text: &str, allow_codes: bool) -> Option<String> {
    let user = uri_user(text);
    // Names (the common case on the INVITE path) are turned away before allocating.
    let first = user.chars().next()?;
    if !(first.is_ascii_digit() || is_separator(first) || matches!(first, '+' | '*' | '#' | '%')) {
        return None;
    }
    let mut out = String::with_capacity(user.len());
    let mut chars = user.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '0'..='9' => out.push(c),
            '+' if out.is_empty() => out.push('+'),
            '*' | '#' if allow_codes => out.push(c),
            '%' if allow_codes => {
                let code = user.get(i + 1..i + 3)?;
                out.push(match code {
                    "2A" | "2a" => '*',
                    "23" => '#',
                    _ => return None,
                });
                chars.next();
                chars.next();
            }
            c if is_separator(c) => {}
            _ => return None,
        }
    }
    let significant = out.trim_start_matches('+');
    (!significant.is_empty()).then_some(out)
}

/// A phone number: digits with an optional leading `+`, or `None`.
pub fn number(text: &str) -> Option<String> {
    normalise(text, false)
}

/// A dialled string: like [`number`] but feature codes (`*57`, `#31#`) are kept.
pub fn dialled(text: &str) -> Option<String> {
    normalise(text, true)
}

/// A local number of a `tel:` (or `sip:`) URI in the global form its `phone-context`
/// gives it (RFC 3966 §5.1.5): `tel:555-0142;phone-context=+1-425` is `+14255550142`.
/// `None` without a global context or when `dialled` (the URI's [`dialled`]) is global.
pub fn in_phone_context(text: &str, dialled: &str) -> Option<String> {
    if dialled.starts_with('+') {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let at = lower.find(";phone-context=")? + ";phone-context=".len();
    let context = text[at..].split([';', '?', '>', '@']).next()?;
    let context = number(context).filter(|c| c.starts_with('+'))?;
    Some(format!("{context}{dialled}"))
}

/// The digits of a normalised number, without the leading `+`.
pub fn digits(number: &str) -> &str {
    number.trim_start_matches('+')
}

/// Whether two normalised numbers are the same (digits compare, `+` ignored).
pub fn same(a: &str, b: &str) -> bool {
    digits(a) == digits(b)
}

/// Whether a normalised number starts with one of `prefixes` (digits compare).
pub fn has_prefix(number: &str, prefixes: &[String]) -> bool {
    let d = digits(number);
    prefixes.iter().any(|p| d.starts_with(digits(p)))
}

/// Whether `uri` addresses a phone number rather than a person: a `tel:` URI, a SIP URI
/// with `user=phone`, or a SIP URI whose user part is a number. Allocates nothing (it is
/// on the INVITE hot path).
pub fn is_number_address(uri: &str) -> bool {
    let tel = uri.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("tel:"));
    tel || uri.contains("user=phone") || looks_like_number(uri_user(uri))
}

/// [`number`] would accept `user`, checked without building the result.
fn looks_like_number(user: &str) -> bool {
    let (mut digits, mut plus) = (false, false);
    for c in user.chars() {
        match c {
            '0'..='9' => digits = true,
            '+' if !digits && !plus => plus = true,
            c if is_separator(c) => {}
            _ => return false,
        }
    }
    digits
}

/// The URI that reaches `number` through the PBX: `sip:<number>@<domain>;user=phone`,
/// built from the precomputed `suffix` (`@<domain>;user=phone`) without formatting. A
/// dial character is escaped (`#` is not allowed in a SIP user part, RFC 3261 §25.1, and
/// a PBX may take a bare `#` for the end of the number); `*` too, for one spelling of both.
pub fn pbx_uri(number: &str, suffix: &str) -> String {
    let mut uri = String::with_capacity(4 + number.len() + suffix.len());
    uri.push_str("sip:");
    for c in number.chars() {
        match c {
            '#' => uri.push_str("%23"),
            '*' => uri.push_str("%2A"),
            c => uri.push(c),
        }
    }
    uri.push_str(suffix);
    uri
}

/// How people in the deployment's country dial, so that what they dial is compared in the
/// form the PBX will act on: `9 1 (900) 555-0123` with outside line `9` is the premium
/// `+19005550123`, and `9911`, `1911`, `+1 911` all reach 911 in the US.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DialPlan {
    /// E.164 country calling code, digits only (`1`, `44`); `None`: numbers are compared
    /// as dialled.
    pub country_code: Option<String>,
    /// Dialled before an area code inside the country (`1` in the NANP, `0` in most of
    /// Europe).
    pub national_prefix: Option<String>,
    /// Dialled before a country code (`011` in the NANP, `00` in most of the world).
    pub international_prefix: Option<String>,
    /// What the PBX wants before any outside number (`9`, `0`); the trunk does not.
    pub outside_line: Option<String>,
}

impl DialPlan {
    /// The plan of a country: its national and international prefixes, unless given.
    pub fn for_country(country_code: Option<String>, outside_line: Option<String>) -> DialPlan {
        let nanp = country_code.as_deref() == Some("1");
        let known = country_code.is_some();
        DialPlan {
            national_prefix: known.then(|| if nanp { "1" } else { "0" }.to_owned()),
            international_prefix: known.then(|| if nanp { "011" } else { "00" }.to_owned()),
            country_code,
            outside_line,
        }
    }

    /// A `#` at the end is the phone's "dial now" key, not part of the number.
    fn without_send_key(dialled: &str) -> &str {
        match dialled.strip_suffix('#') {
            Some(rest) if !rest.is_empty() && !rest.contains(['#', '*']) => rest,
            _ => dialled,
        }
    }

    fn without_outside_line<'a>(&self, dialled: &'a str) -> Option<&'a str> {
        let prefix = self.outside_line.as_deref()?;
        dialled
            .strip_prefix(prefix)
            .filter(|rest| !rest.is_empty() && !dialled.starts_with('+'))
    }

    /// The international (`+`) form of a number dialled with a national or international
    /// prefix (or, in the NANP, as ten digits); `None` for a short or local number.
    fn global(&self, number: &str) -> Option<String> {
        if number.starts_with('+') || number.contains(['#', '*']) {
            return None;
        }
        if let Some(rest) = self
            .international_prefix
            .as_deref()
            .and_then(|p| number.strip_prefix(p))
            .filter(|rest| !rest.is_empty())
        {
            return Some(format!("+{rest}"));
        }
        let cc = self.country_code.as_deref()?;
        // Three digits at least: `112` in the NANP is not `1` + `12`.
        if let Some(rest) = self
            .national_prefix
            .as_deref()
            .and_then(|p| number.strip_prefix(p))
            .filter(|rest| rest.len() >= 3)
        {
            return Some(format!("+{cc}{rest}"));
        }
        let nanp_ten = cc == "1"
            && number.len() == 10
            && number.starts_with(|c: char| ('2'..='9').contains(&c));
        nanp_ten.then(|| format!("+1{number}"))
    }

    /// The number the PBX is asked for: the outside line and the send key taken off, and
    /// prefixed numbers in international form. `dialled` is [`dialled`]'s output.
    ///
    /// With an outside line the reading that makes a whole number wins: `9725551234` is
    /// a ten-digit US number as it stands, `94255550142` is `9` + a ten-digit number.
    pub fn canonical(&self, dialled: &str) -> String {
        let number = Self::without_send_key(dialled);
        let inside = self.without_outside_line(number);
        match (self.global(number), inside.and_then(|n| self.global(n))) {
            (Some(global), _) | (None, Some(global)) => global,
            (None, None) => inside.unwrap_or(number).to_owned(),
        }
    }

    /// Every way a PBX in this country could read `dialled` ([`dialled`]'s output): as
    /// dialled, without the outside line, in international form, and as the national
    /// number when the country code is ours. A number is an emergency number when any
    /// reading is one: refusing too often is safe, letting one through is not.
    pub fn readings(&self, dialled: &str) -> Vec<String> {
        let number = Self::without_send_key(dialled);
        let mut out = vec![number.to_owned()];
        if let Some(rest) = self.without_outside_line(number) {
            out.push(rest.to_owned());
        }
        for i in 0..out.len() {
            let global = self
                .global(&out[i])
                .or_else(|| out[i].starts_with('+').then(|| out[i].clone()));
            let Some(global) = global else { continue };
            if let Some(national) = self
                .country_code
                .as_deref()
                .and_then(|cc| global.strip_prefix('+')?.strip_prefix(cc))
                .filter(|n| !n.is_empty())
            {
                out.push(national.to_owned());
            }
            out.push(global);
        }
        // Any country's short number written in international form (`+1 911`, `+44 999`)
        // when the deployment's country is not known: a real international number is
        // never this short, so nothing callable is refused by it.
        let short: Vec<String> = out
            .iter()
            .filter_map(|n| n.strip_prefix('+'))
            .filter(|d| d.len() <= 6)
            .flat_map(|d| (1..=3).filter_map(move |cc| d.get(cc..)))
            .filter(|rest| rest.len() >= 2)
            .map(str::to_owned)
            .collect();
        out.extend(short);
        out.sort();
        out.dedup();
        out
    }
}

/// [`pbx_uri`] of the number in `text` (a line URI such as `tel:+1-425-555-0101`), in one
/// allocation; `None` when `text` is not a number.
pub fn pbx_uri_of(text: &str, suffix: &str) -> Option<String> {
    let user = uri_user(text);
    if !looks_like_number(user) {
        return None;
    }
    let mut uri = String::with_capacity(4 + user.len() + suffix.len());
    uri.push_str("sip:");
    uri.extend(user.chars().filter(|c| !is_separator(*c)));
    uri.push_str(suffix);
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_every_written_form_normalise_to_the_same_digits() {
        for text in [
            "tel:+14255550101",
            "+1 425 555 0101",
            "+1 (425) 555-0101",
            "sip:+14255550101@pbx.corp.example;user=phone",
            "<sip:+14255550101@pbx>",
            "tel:+1-425-555-0101;phone-context=+1",
        ] {
            assert_eq!(number(text).as_deref(), Some("+14255550101"), "{text}");
        }
        assert_eq!(number("4255550101").as_deref(), Some("4255550101"));
    }

    #[test]
    fn names_and_garbage_are_not_numbers() {
        for text in [
            "sip:alice@corp.example",
            "tel:abc",
            "",
            "+",
            "1+2",
            "++1",
            "*57",
        ] {
            assert_eq!(number(text), None, "{text}");
        }
    }

    #[test]
    fn dialled_feature_codes_keep_star_and_hash_even_escaped() {
        assert_eq!(dialled("*57").as_deref(), Some("*57"));
        assert_eq!(dialled("sip:%2A57@corp.example").as_deref(), Some("*57"));
        assert_eq!(dialled("#31#").as_deref(), Some("#31#"));
        assert_eq!(dialled("sip:%zz@x"), None);
    }

    #[test]
    fn prefixes_and_equality_ignore_the_plus() {
        let premium = vec!["1900".to_owned(), "+44909".to_owned()];
        assert!(has_prefix("+19005551234", &premium));
        assert!(has_prefix("44909123", &premium));
        assert!(!has_prefix("+14255550101", &premium));
        assert!(same("+14255550101", "14255550101"));
    }

    #[test]
    fn number_addresses_are_told_from_people() {
        assert!(is_number_address("tel:+14255550199"));
        assert!(is_number_address(
            "sip:+14255550199@corp.example;user=phone"
        ));
        assert!(is_number_address("sip:4255550199@corp.example"));
        assert!(!is_number_address("sip:alice@corp.example"));
    }

    #[test]
    fn the_quick_number_test_agrees_with_the_parser() {
        for text in [
            "+1 (425) 555-0101",
            "4255550101",
            "alice",
            "+",
            "1+2",
            "++1",
            "*57",
            "",
            " +1",
        ] {
            assert_eq!(looks_like_number(text), number(text).is_some(), "{text:?}");
        }
    }

    #[test]
    fn pbx_uri_of_a_line_uri_drops_the_separators() {
        assert_eq!(
            pbx_uri_of("tel:+1-425-555-0101;phone-context=+1", "@pbx;user=phone").as_deref(),
            Some("sip:+14255550101@pbx;user=phone")
        );
        assert_eq!(pbx_uri_of("tel:abc", "@pbx"), None);
    }

    fn us() -> DialPlan {
        DialPlan::for_country(Some("1".into()), Some("9".into()))
    }

    #[test]
    fn cvw_15_every_us_spelling_of_911_reads_as_911() {
        for typed in [
            "911", "9911", "1911", "91911", "+1 911", "911#", "1-911", "9.911",
        ] {
            let d = dialled(typed).unwrap();
            assert!(
                us().readings(&d).iter().any(|r| r == "911"),
                "{typed}: {:?}",
                us().readings(&d)
            );
        }
        // Unknown country: a short number in international form is still read.
        let anywhere = DialPlan::default();
        for typed in ["+1 911", "+44 999", "+49112"] {
            let d = dialled(typed).unwrap();
            assert!(
                anywhere
                    .readings(&d)
                    .iter()
                    .any(|r| ["911", "999", "112"].contains(&r.as_str())),
                "{typed}"
            );
        }
        assert_eq!(anywhere.readings("+14255550911"), ["+14255550911"]);
        // Without an outside line, 9911 is just a number.
        let plain = DialPlan::for_country(Some("1".into()), None);
        assert!(!plain.readings("9911").iter().any(|r| r == "911"));
    }

    #[test]
    fn cvw_15_european_prefixes_reach_112() {
        let de = DialPlan::for_country(Some("49".into()), Some("0".into()));
        for typed in ["112", "0112", "+49 112", "0049112", "00049112"] {
            let d = dialled(typed).unwrap();
            assert!(
                de.readings(&d).iter().any(|r| r == "112"),
                "{typed}: {:?}",
                de.readings(&d)
            );
        }
        // A London number ending in 112 is not 112.
        let london = dialled("+44 20 7946 0112").unwrap();
        assert!(!de.readings(&london).iter().any(|r| r == "112"));
    }

    #[test]
    fn canonical_numbers_are_what_the_pbx_is_asked_for() {
        let us = us();
        assert_eq!(
            us.canonical(&dialled("9 1 (900) 555-0123").unwrap()),
            "+19005550123"
        );
        assert_eq!(
            us.canonical(&dialled("9-011-44-909-1234").unwrap()),
            "+449091234"
        );
        assert_eq!(
            us.canonical(&dialled("425.555.0142").unwrap()),
            "+14255550142"
        );
        assert_eq!(us.canonical("+14255550142#"), "+14255550142");
        assert_eq!(us.canonical("*57"), "*57");
        assert_eq!(us.canonical("9725551234"), "+19725551234");
        assert_eq!(us.canonical("94255550142"), "+14255550142");
        assert_eq!(us.canonical("9411"), "411");
        assert_eq!(
            DialPlan::default().canonical("9004255550142"),
            "9004255550142"
        );
    }

    #[test]
    fn a_local_tel_number_takes_its_phone_context() {
        let text = "tel:555-0142;phone-context=+1-425";
        let d = dialled(text).unwrap();
        assert_eq!(in_phone_context(text, &d).as_deref(), Some("+14255550142"));
        assert_eq!(
            in_phone_context("tel:+14255550142;phone-context=+1", "+14255550142"),
            None
        );
        // A domain context names no country.
        assert_eq!(
            in_phone_context("tel:911;phone-context=example.com", "911"),
            None
        );
    }

    #[test]
    fn dial_characters_never_reach_a_sip_uri_unescaped() {
        assert_eq!(
            pbx_uri("*72#4255550142", "@pbx;user=phone"),
            "sip:%2A72%234255550142@pbx;user=phone"
        );
    }

    #[test]
    fn pbx_uris_carry_user_phone() {
        assert_eq!(
            pbx_uri("+14255550101", "@pbx.corp.example;user=phone"),
            "sip:+14255550101@pbx.corp.example;user=phone"
        );
    }
}
