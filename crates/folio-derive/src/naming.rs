//! Collection names: the default one derived from the type name, and the
//! compile-time check of an explicit one.

/// The longest collection name (the same limit as `folio_core::validate`).
pub(crate) const MAX_COLLECTION_LEN: usize = 128;

/// The default collection of a type: the snake_case plural of its name
/// (`OrderLine` → `order_lines`, `Category` → `categories`).
pub(crate) fn default_collection(type_name: &str) -> String {
    pluralize(&snake_case(type_name))
}

/// Converts a type name to snake_case.
///
/// A new word starts at an upper-case letter that follows a lower-case
/// letter or a digit, and at the last upper-case letter of an acronym that
/// is followed by a lower-case one (`HTTPRequest` → `http_request`).
/// Underscores are kept as separators, but never doubled, leading or
/// trailing.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            push_separator(&mut out);
            continue;
        }
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let starts_word = match prev {
                Some(p) if p.is_lowercase() || p.is_numeric() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if starts_word {
                push_separator(&mut out);
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn push_separator(out: &mut String) {
    if !out.is_empty() && !out.ends_with('_') {
        out.push('_');
    }
}

/// The English plural of a (snake_case) name, by the regular rules only:
/// `-s`, `-x`, `-z`, `-ch`, `-sh` take `-es`; a consonant followed by `-y`
/// becomes `-ies`; everything else takes `-s` (`person` → `persons`).
pub(crate) fn pluralize(word: &str) -> String {
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| word.ends_with(end))
    {
        return format!("{word}es");
    }
    if let Some(stem) = word.strip_suffix('y')
        && stem
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphabetic() && !"aeiouAEIOU".contains(c))
    {
        return format!("{stem}ies");
    }
    format!("{word}s")
}

/// Checks a collection name: 1–128 characters of `A-Z a-z 0-9 _ -`, the
/// rule `folio_core::validate::collection` applies at run time.
pub(crate) fn validate_collection(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_COLLECTION_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "invalid collection name {name:?}: use 1 to {MAX_COLLECTION_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_collections() {
        for (type_name, collection) in [
            ("Person", "persons"),
            ("OrderLine", "order_lines"),
            ("Address", "addresses"),
            ("Box", "boxes"),
            ("Category", "categories"),
            ("Day", "days"),
            ("Church", "churches"),
            ("Wish", "wishes"),
            ("Quiz", "quizes"),
            ("Key", "keys"),
            ("Status", "statuses"),
            ("HTTPRequest", "http_requests"),
            ("IOError", "io_errors"),
            ("Item2Line", "item2_lines"),
            ("V2", "v2s"),
            ("User", "users"),
            ("A", "as"),
            ("Y", "ys"),
            ("already_snake", "already_snakes"),
            ("_Private", "privates"),
            ("Mixed_Case", "mixed_cases"),
        ] {
            assert_eq!(default_collection(type_name), collection, "{type_name}");
        }
    }

    #[test]
    fn snake_case_words() {
        assert_eq!(snake_case("Person"), "person");
        assert_eq!(snake_case("OrderLine"), "order_line");
        assert_eq!(snake_case("ABC"), "abc");
        assert_eq!(snake_case("ABCDef"), "abc_def");
        assert_eq!(snake_case("Double__Under_"), "double_under");
        assert_eq!(snake_case("Ünïcode"), "ünïcode");
    }

    #[test]
    fn plurals() {
        assert_eq!(pluralize("person"), "persons");
        assert_eq!(pluralize("address"), "addresses");
        assert_eq!(pluralize("box"), "boxes");
        assert_eq!(pluralize("category"), "categories");
        assert_eq!(pluralize("day"), "days");
        assert_eq!(pluralize("church"), "churches");
        assert_eq!(pluralize("order_entry"), "order_entries");
        assert_eq!(pluralize("guy"), "guys");
        assert_eq!(pluralize("y"), "ys");
        assert_eq!(pluralize("item_2y"), "item_2ys");
    }

    #[test]
    fn collection_names() {
        assert!(validate_collection("people").is_ok());
        assert!(validate_collection("Order-Lines_2").is_ok());
        assert!(validate_collection(&"c".repeat(128)).is_ok());
        assert!(validate_collection(&"c".repeat(129)).is_err());
        assert!(validate_collection("").is_err());
        assert!(validate_collection("people; DROP TABLE x").is_err());
        assert!(validate_collection("a/b").is_err());
        assert!(validate_collection("ünïcode").is_err());
        assert_eq!(
            validate_collection("a b").unwrap_err(),
            "invalid collection name \"a b\": use 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'"
        );
    }
}
