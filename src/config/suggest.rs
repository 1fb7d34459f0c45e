//! "Did you mean …?" for misspelt tags and values, including text pasted from a PDF.

/// Replaces typographic ligatures (as PDF text extraction produces: "ﬁ", "ﬂ", …) and
/// typographic quotes with their plain spelling.
pub fn unligature(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' | 'ﬆ' => out.push_str("st"),
            '“' | '”' | '„' | '″' => out.push('"'),
            '‘' | '’' | '′' => out.push('\''),
            '‐' | '‑' | '‒' | '–' | '—' => out.push('-'),
            _ => out.push(c),
        }
    }
    out
}

/// Whether `s` holds characters that [`unligature`] would replace.
pub fn has_typographic_chars(s: &str) -> bool {
    unligature(s) != s
}

fn normalize(s: &str) -> String {
    unligature(s).to_lowercase().replace('-', "_")
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = normalize(word);
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        let c = normalize(candidate);
        if c == wanted {
            return Some(candidate);
        }
        let distance = strsim::levenshtein(&wanted, &c);
        let limit = if c.len() <= 4 { 1 } else { 2 };
        let similarity = strsim::jaro_winkler(&wanted, &c);
        if (distance <= limit || similarity >= 0.9) && best.is_none_or(|(_, s)| similarity > s) {
            best = Some((candidate, similarity));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ligature_pasted_from_pdf_is_recognised() {
        assert_eq!(unligature("keyﬁle"), "keyfile");
        assert_eq!(
            closest("keyﬁle", ["host", "keyfile", "hosts"]),
            Some("keyfile")
        );
        assert!(has_typographic_chars("host_ip=”7.7.7.7”"));
    }

    #[test]
    fn typos_and_case() {
        let tags = ["squash_user", "src_port_filtering", "proxy_port", "host"];
        assert_eq!(closest("squash-user", tags), Some("squash_user"));
        assert_eq!(closest("src_port_filter", tags), Some("src_port_filtering"));
        assert_eq!(closest("Proxy_Port", tags), Some("proxy_port"));
        assert_eq!(closest("hots", tags), Some("host"));
        assert_eq!(closest("database", tags), None);
    }
}
