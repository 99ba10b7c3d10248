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
/// built from the precomputed `suffix` (`@<domain>;user=phone`) without formatting.
pub fn pbx_uri(number: &str, suffix: &str) -> String {
    let mut uri = String::with_capacity(4 + number.len() + suffix.len());
    uri.push_str("sip:");
    uri.push_str(number);
    uri.push_str(suffix);
    uri
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

    #[test]
    fn pbx_uris_carry_user_phone() {
        assert_eq!(
            pbx_uri("+14255550101", "@pbx.corp.example;user=phone"),
            "sip:+14255550101@pbx.corp.example;user=phone"
        );
    }
}
