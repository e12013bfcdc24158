//! `#[db(rename_all = "...")]`: the rules that turn field names into column
//! names, as sqlx and serde name them.

use heck::{ToKebabCase, ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use syn::LitStr;

/// A `rename_all` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameAll {
    /// `lowercase`: `UserId` → `userid`.
    Lower,
    /// `UPPERCASE`: `user_id` → `USER_ID`.
    Upper,
    /// `snake_case`: `userId` → `user_id`.
    Snake,
    /// `camelCase`: `user_id` → `userId`.
    Camel,
    /// `PascalCase`: `user_id` → `UserId`.
    Pascal,
    /// `SCREAMING_SNAKE_CASE`: `user_id` → `USER_ID`.
    ScreamingSnake,
    /// `kebab-case`: `user_id` → `user-id`.
    Kebab,
}

const RULES: [(&str, RenameAll); 7] = [
    ("lowercase", RenameAll::Lower),
    ("UPPERCASE", RenameAll::Upper),
    ("snake_case", RenameAll::Snake),
    ("camelCase", RenameAll::Camel),
    ("PascalCase", RenameAll::Pascal),
    ("SCREAMING_SNAKE_CASE", RenameAll::ScreamingSnake),
    ("kebab-case", RenameAll::Kebab),
];

impl RenameAll {
    /// The rule `lit` names, or an error on the literal listing the rules.
    pub(crate) fn parse(lit: &LitStr) -> syn::Result<RenameAll> {
        let name = lit.value();
        RULES
            .iter()
            .find(|(rule, _)| *rule == name)
            .map(|(_, rule)| *rule)
            .ok_or_else(|| {
                let known: Vec<String> = RULES.iter().map(|(r, _)| format!("{r:?}")).collect();
                syn::Error::new(
                    lit.span(),
                    format!(
                        "unknown rename_all rule {name:?}; expected one of {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The column name of a field called `field`.
    pub(crate) fn apply(self, field: &str) -> String {
        match self {
            RenameAll::Lower => field.to_lowercase(),
            RenameAll::Upper => field.to_uppercase(),
            RenameAll::Snake => field.to_snake_case(),
            RenameAll::Camel => field.to_lower_camel_case(),
            RenameAll::Pascal => field.to_upper_camel_case(),
            RenameAll::ScreamingSnake => field.to_shouty_snake_case(),
            RenameAll::Kebab => field.to_kebab_case(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> RenameAll {
        match RenameAll::parse(&syn::parse_quote!(#name)) {
            Ok(r) => r,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    #[test]
    fn every_rule_renames_as_sqlx_does() {
        let cases = [
            ("lowercase", "user_id", "user_id"),
            ("lowercase", "UserId", "userid"),
            ("UPPERCASE", "user_id", "USER_ID"),
            ("snake_case", "userId", "user_id"),
            ("camelCase", "user_id", "userId"),
            ("PascalCase", "user_id", "UserId"),
            ("SCREAMING_SNAKE_CASE", "user_id", "USER_ID"),
            ("kebab-case", "user_id", "user-id"),
        ];
        for (name, field, column) in cases {
            assert_eq!(rule(name).apply(field), column, "{name} of {field}");
        }
    }

    #[test]
    fn an_unknown_rule_lists_the_known_ones() {
        let err = RenameAll::parse(&syn::parse_quote!("camel_case")).expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown rename_all rule \"camel_case\""),
            "{msg}"
        );
        assert!(
            msg.contains("\"camelCase\"") && msg.contains("\"kebab-case\""),
            "{msg}"
        );
    }
}
