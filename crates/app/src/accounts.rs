//! Accounts: workspaces with their owner and first admin key, the first workspace of an
//! empty store, and password hashing. Signing in is `sessions`.

use agentnexus_store::{Actor, NewOwner, Store};
use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use chrono::Utc;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::error::{Error, Result};
use crate::types::Email;

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

pub fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// What a new workspace starts with; the key and password are shown once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedWorkspace {
    pub workspace: String,
    pub owner_email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_password: Option<String>,
    pub admin_key: String,
}

/// Creates a workspace with an owner (password given or generated) and an admin key. A
/// workspace's name is 1-64 of a-z 0-9 - _ . (as a policy's).
pub async fn create_workspace(
    store: &Store,
    name: &str,
    owner_email: &str,
    password: Option<String>,
    actor: Actor,
) -> Result<CreatedWorkspace> {
    if !agentnexus_engine::valid_policy_name(name) {
        return Err(Error::field(
            "name",
            "a workspace name is 1-64 of a-z 0-9 - _ .",
        ));
    }
    let owner_email = Email::parse(owner_email)?;
    let owner_email = owner_email.as_str();
    // One account per person across workspaces: an existing one keeps its password.
    let has_account = store.account_password(owner_email).await?.is_some();
    if has_account && password.is_some() {
        return Err(Error::Conflict(format!(
            "{owner_email} already has an account, whose password stays: leave the password out"
        )));
    }
    let generated = password.is_none() && !has_account;
    let password = password.unwrap_or_else(random_password);
    let (_, _, key) = store
        .create_workspace(
            name,
            NewOwner {
                email: owner_email.to_owned(),
                name: None,
                password_hash: hash_password(&password),
            },
            actor,
            Utc::now(),
        )
        .await?;
    Ok(CreatedWorkspace {
        workspace: name.to_owned(),
        owner_email: owner_email.to_owned(),
        owner_password: generated.then_some(password),
        admin_key: key.secret,
    })
}

/// On an empty store, creates the `default` workspace; otherwise does nothing.
pub async fn bootstrap(
    store: &Store,
    email: &str,
    password: Option<String>,
) -> Result<Option<CreatedWorkspace>> {
    if !store.workspaces().await?.is_empty() {
        return Ok(None);
    }
    match create_workspace(store, "default", email, password, Actor::System).await {
        Ok(created) => Ok(Some(created)),
        // Another replica bootstrapped first.
        Err(Error::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_verify() {
        let h = super::hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify_password("correct horse", &h));
        assert!(!super::verify_password("wrong", &h));
    }
}
