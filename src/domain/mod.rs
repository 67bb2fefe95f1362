//! Validated domain types: each can only be built from input that satisfies the contract.
mod amr;
mod api_key;
mod email;
mod field_error;
mod password;
mod user;
mod user_name;

pub use amr::{Amr, AuthMethod};
pub use api_key::{ApiKeyValue, KeyProvider, SealedKey};
pub use email::Email;
pub use field_error::{FieldError, FieldErrors};
pub use password::Password;
pub use user::{AuthProvider, User, UserId};
pub use user_name::UserName;
