//! What each Tencent `ErrorCode` means for delivery.
//!
//! The table is Tencent's own, per API:
//! - every REST API: the public codes 60000–79999 of the "Error Codes" page
//!   (<https://cloud.tencent.com/document/product/269/1671>, section "REST
//!   API 公共错误码"; the broadcast page, seed `001_b398f8e838fd118e.txt`,
//!   points there for them);
//! - the group APIs (`send_broadcast_msg`, `send_group_msg`): the 10xxx and
//!   80xxx codes of their pages (seed `001_…`, "Sending Ordinary Messages in
//!   a Group", <https://www.tencentcloud.com/document/product/1047/34959>)
//!   and the SDK's table of server messages
//!   (<https://web.sdk.qcloud.com/im/download/error-message/v3/0.0.4/tim-error-message.txt>);
//! - `openim/sendmsg`: the 20xxx and 90xxx codes of "Sending One-to-One
//!   Messages to One User"
//!   (<https://www.tencentcloud.com/document/product/1047/34919>) and the
//!   one-to-one section of the "Error Codes" page.
//!
//! A code not listed stays a plain rejection with Tencent's own words.

use super::{Api, C2C, GROUP};

/// What one error code asks of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meaning {
    /// Refused for good; the words say why, Tencent's `ErrorInfo` follows.
    Rejected(&'static str),
    /// A fault on Tencent's side: the same request may pass later.
    Retry(&'static str),
    /// One of Tencent's frequency limits answered.
    RateLimited(&'static str),
    /// The app's credentials or rights were refused; retrying needs the
    /// operator.
    Credentials(&'static str),
    /// 70001: make a fresh UserSig and try once more.
    UserSigExpired,
}

/// The meaning of `code` in an answer from `api`.
pub(super) fn meaning(api: Api, code: i64) -> Meaning {
    use Meaning::{Credentials, RateLimited, Rejected, Retry, UserSigExpired};
    match code {
        // REST API public codes (every API).
        60002 => Rejected("Tencent could not parse the HTTP request; check the url"),
        60003 => Rejected("the request body is not valid JSON"),
        60004 => Credentials("the account or signature in the request URL is missing or wrong"),
        60005 => Credentials("the account or signature in the request is wrong"),
        60006 => Credentials("the SDKAppID is no longer valid; check sdkappid"),
        60007 => RateLimited("the REST API call frequency limit was exceeded"),
        60008 => Retry("the request timed out at Tencent"),
        60009 => Rejected("no such REST API; check the url (the region domain)"),
        60010 | 70403 => Credentials("the identifier is not an app admin"),
        60011 => RateLimited("the SDKAppID's request frequency limit was exceeded"),
        60012 => Rejected("the request URL carries no SDKAppID"),
        60013 => Retry("Tencent could not read its own internal answer"),
        60014 => Retry("exchanging the account timed out at Tencent"),
        60015 => Rejected("an account in the request body is not a string"),
        60016 => Credentials("the SDKAppID is disabled"),
        60017 => Credentials("requests are disabled for this app"),
        60018 | 60019 => RateLimited("too many requests"),
        60020 => Credentials(
            "the app's Pro plan package has expired; buy one in the console (it applies 5 minutes later)",
        ),
        60021 => Credentials(
            "the call came from an IP address the app does not allow (REST API IP allowlist in the console)",
        ),
        70001 => UserSigExpired,
        70002 => Credentials("the UserSig was empty"),
        70003 => Credentials("the UserSig is malformed and could not be decoded"),
        70005 => Credentials("the UserSig could not be verified"),
        70009 => Credentials("bad UserSig signature: secret_key does not belong to this sdkappid"),
        70013 => Credentials("the UserSig was made for another identifier than the request's"),
        70014 => Credentials("the UserSig was made for another sdkappid than the request's"),
        70016 => {
            Credentials("Tencent has no key for this sdkappid; check secret_key in the console")
        }
        70020 => Credentials("sdkappid not found; check it and the region domain in url"),
        70050 => Credentials("too many failed UserSig checks; the account is refused for a while"),
        70051 => Credentials("the identifier's account is blocklisted"),
        70107 => Rejected("the account is not imported into Tencent Chat (account_import)"),
        70000..=70099 => Credentials("the UserSig was refused"),

        // Group APIs (send_broadcast_msg, send_group_msg).
        10002 => Retry("internal server error"),
        10003 => Rejected("invalid command word"),
        10004 => Rejected("invalid parameter"),
        10005 => Rejected("too many accounts in the request"),
        10006 => RateLimited("operation frequency limit"),
        10007 if api == GROUP => Rejected(
            "not permitted: the identifier is not the app admin, or the group does not let it post",
        ),
        10007 => Rejected(
            "not permitted: the console switch \"Broadcast messaging of audio-video group\" (Feature configuration > Group configuration) may be off, the plan may lack it (Pro, Pro Plus or Enterprise), or the identifier is not the app admin",
        ),
        10008 => Retry("Tencent found the request invalid, possibly its signature"),
        10010 => Rejected("the group was dismissed or does not exist"),
        10011 => Rejected("the request body is not valid JSON"),
        10012 => Rejected("the sender (From_Account) is not a valid UserID"),
        10015 => Rejected("the GroupId is invalid"),
        10016 => Rejected("the app's before-send callback refused the message"),
        10017 => Rejected("the sender is muted in this group"),
        10019 => Rejected("the sender's account (From_Account) does not exist; import it first"),
        10023 => RateLimited("too frequent"),
        10026 => Rejected("this command is disabled for the SDKAppID"),
        80001 => Rejected("the message was filtered as sensitive content"),
        80002 => Rejected("the message is longer than 12 KB"),

        // openim/sendmsg (one-to-one).
        20001 => Rejected("the request packet is invalid"),
        20002 => Credentials("the UserSig or A2 is invalid"),
        20003 => Rejected(
            "the recipient (To_Account) or the sender (From_Account) is not a valid UserID imported into Tencent Chat",
        ),
        20004 => Retry("network error at Tencent"),
        20005 => Retry("internal server error"),
        20006 => Rejected("the app's before-send callback refused the one-to-one message"),
        20007 => Rejected("the recipient has blocklisted the sender"),
        20009 => Rejected(
            "the two users are not friends, and the app checks friendship for one-to-one messages",
        ),
        20010 => Rejected(
            "the sender is not the recipient's friend, and the app checks friendship for one-to-one messages",
        ),
        20011 => Rejected(
            "the recipient is not the sender's friend, and the app checks friendship for one-to-one messages",
        ),
        20012 => Rejected("the sender is muted"),
        90001 => Rejected("the request body is not valid JSON"),
        90002 => Rejected("MsgBody does not follow Tencent's message formats"),
        90003 => Rejected("To_Account is missing or not a string"),
        90005 => Rejected("MsgRandom is missing or not an integer"),
        90007 => Rejected("MsgBody is not an array"),
        90009 => {
            Credentials("the request needs app admin rights: the identifier is not an app admin")
        }
        90010 => Rejected("the request does not follow Tencent's message formats"),
        90026 => Rejected("the offline storage time (MsgLifeTime) is out of range"),
        90992 | 91000 => Retry("internal service error"),
        93000 => Rejected("the message body is longer than 12 KB"),
        _ if api == C2C => Rejected("the one-to-one message was refused"),
        _ => Rejected("refused"),
    }
}
