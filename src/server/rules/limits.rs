//! [`Limits`]: the bounds a store decides REGISTERs and DISCOVERs by, and the refusal each one
//! answers with.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::{Page, Refusal};
use crate::{
    codec::{ErrorCode, ErrorResponse, SignedRecord, Ttl},
    server::{Config, Limit, ServedFormats},
};

/// The limits of a [`Config`] that a store enforces, with the checks and refusals of each. A
/// check takes the numbers it needs (a store counts what it holds its own way) and says
/// whether the request passes; the refusals carry the status, the statusText and the [`Limit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    min_ttl: Ttl,
    max_ttl: Ttl,
    max_record_size: usize,
    max_addresses_per_record: usize,
    max_registrations_per_peer: usize,
    max_registrations: usize,
    max_store_bytes: usize,
    default_page: usize,
    max_page: usize,
    max_message_size: usize,
}

impl Limits {
    /// The limits of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
            max_record_size: config.max_record_size,
            max_addresses_per_record: config.max_addresses_per_record,
            max_registrations_per_peer: config.max_registrations_per_peer,
            max_registrations: config.max_registrations,
            max_store_bytes: config.max_store_bytes,
            default_page: config.default_page,
            max_page: config.max_page,
            max_message_size: config.max_message_size,
        }
    }

    /// Registrations one peer may hold ([`Config::with_max_registrations_per_peer`]).
    pub fn max_registrations_per_peer(&self) -> usize {
        self.max_registrations_per_peer
    }

    /// Registrations the store may hold in total ([`Config::with_max_registrations`]).
    pub fn max_registrations(&self) -> usize {
        self.max_registrations
    }

    /// Bytes the store may hold, as it counts them ([`Config::with_max_store_bytes`]).
    pub fn max_store_bytes(&self) -> usize {
        self.max_store_bytes
    }

    /// The largest message written; pages are cut to fit it.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The TTL a REGISTER asking for `asked` is granted (absent: [`crate::DEFAULT_TTL`]), or
    /// `E_INVALID_TTL` when it is outside the configured bounds.
    pub fn granted_ttl(&self, asked: Option<Ttl>) -> Result<Ttl, Refusal> {
        let ttl = asked.unwrap_or(crate::DEFAULT_TTL);
        let (min, max) = (self.min_ttl, self.max_ttl);
        if ttl < min || ttl > max {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidTtl,
                format!("ttl is {ttl} s; expected {min}..={max} s"),
            )
            .into());
        }
        Ok(ttl)
    }

    /// When a registration granted `ttl` at `now` ends, or `E_INVALID_TTL` if that is beyond
    /// what an `Instant` can hold (only with a configuration that [`Config::validate`]
    /// refuses).
    pub fn deadline(ttl: Ttl, now: Instant) -> Result<Instant, Refusal> {
        now.checked_add(Duration::from_secs(ttl)).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::InvalidTtl,
                format!("ttl is {ttl} s; this server cannot keep a registration that long"),
            )
            .into()
        })
    }

    /// Whether an envelope of `len` bytes is small enough ([`Limit::Record`],
    /// `E_INVALID_SIGNED_PEER_RECORD`). Checked before the envelope is decoded.
    pub fn check_record_size(&self, len: usize) -> Result<(), Refusal> {
        let max = self.max_record_size;
        if len > max {
            return Err(Refusal::by(
                Limit::Record,
                ErrorResponse::new(
                    ErrorCode::InvalidSignedPeerRecord,
                    format!("signed peer record is {len} bytes; this server accepts at most {max}"),
                ),
            ));
        }
        Ok(())
    }

    /// Whether `record` is `peer`'s own (`E_NOT_AUTHORIZED`) and lists few enough addresses
    /// ([`Limit::Record`], `E_INVALID_SIGNED_PEER_RECORD`).
    pub fn check_record(&self, peer: PeerId, record: &SignedRecord) -> Result<(), Refusal> {
        if record.peer_id() != peer {
            return Err(ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "the signed peer record is for peer {}; a peer can only register itself \
                     ({peer})",
                    record.peer_id()
                ),
            )
            .into());
        }
        let (count, max) = (record.addresses().len(), self.max_addresses_per_record);
        if count > max {
            return Err(Refusal::by(
                Limit::Record,
                ErrorResponse::new(
                    ErrorCode::InvalidSignedPeerRecord,
                    format!(
                        "signed peer record lists {count} addresses; this server accepts at most \
                         {max}"
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// Whether a new registration fits the registration limits, when its peer holds
    /// `of_peer` and the store `total`. A refresh never counts as new: do not check it.
    pub fn check_counts(&self, of_peer: usize, total: usize) -> Result<(), Refusal> {
        if of_peer >= self.max_registrations_per_peer {
            return Err(Self::peer_full(of_peer));
        }
        if total >= self.max_registrations {
            return Err(Self::server_full(total));
        }
        Ok(())
    }

    /// The refusal of a new registration by a peer that holds `count`, the most allowed
    /// ([`Limit::PeerRegistrations`], `E_NOT_AUTHORIZED`: refused for this peer, as
    /// rust-libp2p answers it).
    pub fn peer_full(count: usize) -> Refusal {
        Refusal::by(
            Limit::PeerRegistrations,
            ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "peer already has {count} registrations, the most this server allows; \
                     unregister one first"
                ),
            ),
        )
    }

    /// The refusal of a new registration by a store that holds `count`, the most allowed
    /// ([`Limit::Registrations`], `E_UNAVAILABLE`).
    pub fn server_full(count: usize) -> Refusal {
        Refusal::by(
            Limit::Registrations,
            ErrorResponse::new(
                ErrorCode::Unavailable,
                format!("server is full ({count} registrations); try later or another server"),
            ),
        )
    }

    /// Whether a registration that adds `added` bytes and frees `freed` (what it replaces)
    /// fits the byte budget while `in_use` are held. A change that does not grow the store
    /// always passes.
    pub fn check_bytes(&self, added: usize, freed: usize, in_use: usize) -> Result<(), Refusal> {
        let after = in_use.saturating_sub(freed).saturating_add(added);
        if added <= freed || after <= self.max_store_bytes {
            return Ok(());
        }
        Err(self.over_byte_budget(added, in_use))
    }

    /// The refusal of a registration that needs `needed` bytes while `in_use` are held
    /// ([`Limit::StoreBytes`], `E_UNAVAILABLE`).
    pub fn over_byte_budget(&self, needed: usize, in_use: usize) -> Refusal {
        Refusal::by(
            Limit::StoreBytes,
            ErrorResponse::new(
                ErrorCode::Unavailable,
                format!(
                    "store byte budget exhausted: this registration needs {needed} bytes and \
                     {in_use} of {} bytes (max-store-bytes) are in use; try later or another \
                     server",
                    self.max_store_bytes
                ),
            ),
        )
    }

    /// How many registrations a page holds at most when the DISCOVER asks for `asked`: the
    /// configured default when it gives none (or 0), never more than the configured maximum.
    pub fn page_limit(&self, asked: Option<u64>) -> usize {
        let limit = match asked {
            None | Some(0) => self.default_page,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        limit.min(self.max_page)
    }

    /// An empty page for a DISCOVER asking for `asked` registrations after sequence number
    /// `after` (its cookie's, carrying `mark`), for an asker served `served`.
    pub fn page(
        &self,
        served: ServedFormats,
        asked: Option<u64>,
        after: u64,
        mark: Option<ServedFormats>,
    ) -> Page {
        Page::new(
            served,
            self.page_limit(asked),
            self.max_message_size,
            after,
            mark,
        )
    }
}
