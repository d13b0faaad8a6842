#!/usr/bin/env python3
"""Verify an AgentNexus compliance evidence bundle, offline.

Run it from anywhere, with Python 3.9 or later and nothing but its standard library:

    python3 verify.py [--public-key KEY.pem]

The bundle is the directory this file is in. It checks:

1. SHA256SUMS: every file it lists is there with that SHA-256, and it lists every file in
   the bundle but itself (`sha256sum -c SHA256SUMS` checks the first half).
2. The public key: the one given with --public-key, or else the bundle's own public_key.pem.
   Only a key obtained from the server itself (GET /api/v1/audit/signing-key, its
   `public_key_pem`) proves who signed the bundle; the bundle's own copy proves only that
   the bundle is consistent. Given a key, the bundle's public_key.pem must be that key.
3. attestation.json: a DSSE envelope, Ed25519-signed by that key, of an in-toto Statement
   naming every file but itself and SHA256SUMS, each with its SHA-256.
4. checkpoint.json: the audit chain's head (seq and hash), signed by the same key over its
   RFC 8785 canonical JSON, and the same head as the attestation names.
5. audit_events.jsonl: every event's hash is SHA-256("agentnexus/audit-event/v1" NUL,
   prev_hash, canonical JSON of the event without its hashes); the events are consecutive,
   each linked to the one before, and none goes past the signed checkpoint (the one at its
   seq, if present, has the signed hash).
6. The populations are the chain's: evaluations.csv holds exactly the evaluations whose
   evaluation.created events are in audit_events.jsonl, and approvals.csv and receipts.csv
   exactly its approval.decided and receipt.recorded events.

It prints one line per check, "ok" or "FAIL" with the reason, and exits 0 only when every
check passed, 1 when one failed, 2 on a usage error (such as an unreadable --public-key).
"""

import argparse
import base64
import binascii
import csv
import hashlib
import io
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
SUMS, ATTESTATION, CHECKPOINT = "SHA256SUMS", "attestation.json", "checkpoint.json"
EVENTS, BUNDLE_KEY = "audit_events.jsonl", "public_key.pem"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://agentnexus.dev/evidence-bundle/v1"
AUDIT_DOMAIN = b"agentnexus/audit-event/v1\x00"
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo prefix
EVENT_KEYS = {"actor", "data", "evaluation_id", "hash", "occurred_at", "prev_hash", "seq",
              "type", "workspace_id"}
HEX64 = re.compile(r"[0-9a-f]{64}\Z")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")


class Failure(Exception):
    """A check failed; the message says why."""


# --- Ed25519 signature verification (RFC 8032, section 5.1) ------------------------------

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(p, q):
    """Adds two points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z."""
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(s, point):
    result = (0, 1, 1, 0)
    while s:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def _decode_point(data):
    """The point a 32-byte encoding stands for, or None if it is not a valid encoding."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def _encode_point(point):
    z_inv = pow(point[2], P - 2, P)
    x, y = point[0] * z_inv % P, point[1] * z_inv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


_BY = 4 * pow(5, P - 2, P) % P
BASE = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def ed25519_verify(public_key, message, signature):
    """Whether `signature` (64 bytes) is `public_key`'s (32 bytes) over `message`."""
    if len(signature) != 64:
        return False
    a, r = _decode_point(public_key), _decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    minus_a = (P - a[0], a[1], a[2], P - a[3])
    # [S]B == R + [k]A, as [S]B - [k]A encoded, compared with R's (canonical) encoding.
    return _encode_point(_add(_multiply(s, BASE), _multiply(k % L, minus_a))) == signature[:32]


# --- RFC 8785 (JCS) canonical JSON -------------------------------------------------------

def canonical(value):
    """The RFC 8785 canonical JSON of a parsed JSON value, as UTF-8 bytes."""
    try:
        return _canonical(value).encode("utf-8")
    except UnicodeEncodeError:
        raise Failure("a string holds a lone surrogate, which is not Unicode text")


def _canonical(value):
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes exactly as RFC 8785 does
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_canonical(k) + ":" + _canonical(value[k]) for k in keys) + "}"
    raise Failure("not a JSON value: %r" % type(value).__name__)


def _number(n):
    """A number as ECMAScript's Number.prototype.toString writes the double it is."""
    if isinstance(n, int):
        if abs(n) <= 2 ** 53:
            return str(n)
        try:
            n = float(n)
        except OverflowError:
            raise Failure("a number is out of range")
    if n != n or n in (float("inf"), float("-inf")):
        raise Failure("a number is not finite")
    if n == 0:
        return "0"
    # The shortest digits that round-trip (repr's), and n: the value is 0.digits * 10**n.
    mantissa, _, exponent = repr(abs(n)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits, point = whole + fraction, len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, sign = len(digits), "-" if n < 0 else ""
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    e = point - 1
    tail = "." + digits[1:] if k > 1 else ""
    return "%s%s%se%s%d" % (sign, digits[0], tail, "+" if e >= 0 else "-", abs(e))


# --- Reading the bundle ------------------------------------------------------------------

def _object(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise Failure("duplicate key %r" % key)
        result[key] = value
    return result


def _no_constant(name):
    raise Failure("%s is not JSON" % name)


def parse_json(text, what):
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
    except Failure as e:
        raise Failure("%s: %s" % (what, e))
    except (ValueError, RecursionError) as e:
        raise Failure("%s is not JSON (%s)" % (what, e))


def b64decode(text, what):
    """Strict standard base64 (padded, canonical), as the server writes it."""
    if not isinstance(text, str):
        raise Failure("%s is not a base64 string" % what)
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        raise Failure("%s is not valid base64" % what)
    if base64.b64encode(data).decode("ascii") != text:
        raise Failure("%s is not canonical base64" % what)
    return data


def check_path(name):
    """Refuses a name that is not a plain relative path inside the bundle."""
    parts = name.split("/")
    if (not name or name.startswith("/") or os.path.isabs(name) or "\\" in name
            or "\x00" in name or any(p in ("", ".", "..") for p in parts)):
        raise Failure("%r is not a plain relative path" % name)


def read_bytes(name):
    check_path(name)
    try:
        with open(os.path.join(ROOT, *name.split("/")), "rb") as f:
            return f.read()
    except OSError as e:
        raise Failure("cannot read %s (%s)" % (name, e.strerror or e))


def read_text(name):
    try:
        return read_bytes(name).decode("utf-8")
    except UnicodeDecodeError:
        raise Failure("%s is not UTF-8 text" % name)


def load_json(name):
    return parse_json(read_text(name), name)


_digests = {}


def file_sha256(name):
    if name not in _digests:
        _digests[name] = hashlib.sha256(read_bytes(name)).hexdigest()
    return _digests[name]


def bundle_files():
    """Every file under the bundle's root, as relative paths with '/'."""
    found = set()
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".pyc"):
                path = os.path.relpath(os.path.join(directory, name), ROOT)
                found.add(path.replace(os.sep, "/"))
    return found


def expect(condition, message):
    if not condition:
        raise Failure(message)


def summarize(problems, limit=8):
    shown = "; ".join(problems[:limit])
    return shown + ("; and %d more" % (len(problems) - limit) if len(problems) > limit else "")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_public_key(text):
    """The raw 32-byte Ed25519 key in a PEM "PUBLIC KEY" (SubjectPublicKeyInfo)."""
    match = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", text, re.S)
    expect(match, "no PEM PUBLIC KEY block")
    der = b64decode("".join(match.group(1).split()), "the PEM body")
    expect(len(der) == 44 and der.startswith(SPKI_ED25519), "not an Ed25519 public key")
    expect(_decode_point(der[12:]) is not None, "not a valid Ed25519 public key")
    return der[12:]


def bundle_key():
    text = read_text(BUNDLE_KEY)
    try:
        return parse_public_key(text)
    except Failure as e:
        raise Failure("%s: %s" % (BUNDLE_KEY, e))


def key_id_of(raw):
    return hashlib.sha256(raw).hexdigest()[:16]


# --- The checks --------------------------------------------------------------------------

class Verifier:
    def __init__(self, given_key, given_path):
        self.given_key, self.given_path = given_key, given_path
        self.key = self.key_id = self.parsed_events = None
        self.failures = 0

    def check(self, what, fn):
        """Runs one check; prints its line. A check returns an optional detail or raises."""
        try:
            detail = fn()
        except Failure as e:
            print("FAIL %s: %s" % (what, e))
            self.failures += 1
        except Exception as e:  # hostile input must never end in a traceback
            print("FAIL %s: unexpected error: %s: %s" % (what, type(e).__name__, e))
            self.failures += 1
        else:
            print("ok   %s%s" % (what, ": " + detail if detail else ""))

    def require_key(self):
        expect(self.key is not None, "no public key to check the signature with (see above)")
        return self.key

    def sums(self):
        listed, lines = {}, read_text(SUMS).split("\n")
        if lines[-1] == "":
            lines.pop()
        for n, line in enumerate(lines, 1):
            match = re.match(r"([0-9a-f]{64})  (.+)\Z", line)
            expect(match, "line %d is not '<sha256>  <path>'" % n)
            name = match.group(2)
            check_path(name)
            expect(name not in listed, "%s is listed twice" % name)
            listed[name] = match.group(1)
        return listed

    def check_sums_digests(self):
        listed, problems = self.sums(), []
        for name, digest in sorted(listed.items()):
            try:
                if file_sha256(name) != digest:
                    problems.append("%s: SHA-256 differs (the file was changed)" % name)
            except Failure as e:
                problems.append(str(e))
        expect(not problems, summarize(problems))
        return "%d files" % len(listed)

    def check_sums_cover(self):
        listed, present = set(self.sums()), bundle_files() - {SUMS}
        problems = ["%s lists itself" % SUMS] if SUMS in listed else []
        problems += ["%s is not in the bundle" % n for n in sorted(listed - present - {SUMS})]
        problems += ["%s is in the bundle but not listed" % n for n in sorted(present - listed)]
        expect(not problems, summarize(problems))
        return "%d files, no more, no fewer" % len(present)

    def check_public_key(self):
        if self.given_key is not None:
            self.key = self.given_key
            return "%s, key_id %s" % (self.given_path, key_id_of(self.key))
        self.key = bundle_key()
        return "%s from the bundle, key_id %s" % (BUNDLE_KEY, key_id_of(self.key))

    def check_bundle_key_is_given(self):
        raw = bundle_key()
        expect(raw == self.given_key, "%s is key_id %s, not the given key %s"
               % (BUNDLE_KEY, key_id_of(raw), key_id_of(self.given_key)))

    def envelope(self):
        envelope = load_json(ATTESTATION)
        expect(isinstance(envelope, dict), "%s is not a JSON object" % ATTESTATION)
        expect(envelope.get("payloadType") == PAYLOAD_TYPE,
               "payloadType is %r, not %r" % (envelope.get("payloadType"), PAYLOAD_TYPE))
        signatures = envelope.get("signatures")
        expect(isinstance(signatures, list) and signatures, "no signatures")
        expect(all(isinstance(s, dict) for s in signatures), "a signature is not an object")
        return signatures, b64decode(envelope.get("payload"), "payload")

    def check_attestation_signature(self):
        key = self.require_key()
        signatures, payload = self.envelope()
        kind = PAYLOAD_TYPE.encode("utf-8")
        pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
        ours = [s for s in signatures if s.get("keyid") == self.key_id]
        expect(ours, "no signature by key_id %s (signed by: %s)"
               % (self.key_id, ", ".join(str(s.get("keyid")) for s in signatures)))
        for signature in ours:
            if ed25519_verify(key, pae, b64decode(signature.get("sig"), "sig")):
                return "signed by key_id %s" % self.key_id
        raise Failure("the signature by key_id %s does not verify" % self.key_id)

    def statement(self):
        try:
            text = self.envelope()[1].decode("utf-8")
        except UnicodeDecodeError:
            raise Failure("the payload is not UTF-8")
        statement = parse_json(text, "the payload")
        expect(isinstance(statement, dict), "the statement is not a JSON object")
        expect(statement.get("_type") == STATEMENT_TYPE, "_type is not %s" % STATEMENT_TYPE)
        expect(statement.get("predicateType") == PREDICATE_TYPE,
               "predicateType is not %s" % PREDICATE_TYPE)
        expect(isinstance(statement.get("subject"), list), "subject is not a list")
        predicate = statement.get("predicate")
        expect(isinstance(predicate, dict), "predicate is not an object")
        expect(isinstance(predicate.get("workspace"), str), "predicate.workspace is not a string")
        for field in ("from", "to", "generated_at"):
            value = predicate.get(field)
            expect(isinstance(value, str) and RFC3339.match(value),
                   "predicate.%s is not an RFC 3339 time" % field)
        chain = predicate.get("chain")
        expect(isinstance(chain, dict) and is_int(chain.get("seq"))
               and isinstance(chain.get("head_hash"), str)
               and HEX64.match(chain.get("head_hash")),
               "predicate.chain is not {seq: integer, head_hash: SHA-256 hex}")
        return statement

    def check_statement(self):
        p = self.statement()["predicate"]
        return "workspace %s, %s to %s" % (p["workspace"], p["from"], p["to"])

    def check_subjects(self):
        expected, named, problems = bundle_files() - {ATTESTATION, SUMS}, set(), []
        for subject in self.statement()["subject"]:
            name = subject.get("name") if isinstance(subject, dict) else None
            digest = subject.get("digest") if isinstance(subject, dict) else None
            sha = digest.get("sha256") if isinstance(digest, dict) else None
            if not isinstance(name, str) or not isinstance(sha, str):
                problems.append("a subject is not {name, digest: {sha256}}")
                continue
            if name in named:
                problems.append("%s is named twice" % name)
            elif name not in expected:
                problems.append("%s is named but not in the bundle" % name)
            elif file_sha256(name) != sha:
                problems.append("%s: SHA-256 differs from the signed one" % name)
            named.add(name)
        problems += ["%s is in the bundle but not attested" % n for n in sorted(expected - named)]
        expect(not problems, summarize(problems))
        return "%d files, each digest matches" % len(named)

    def checkpoint(self):
        checkpoint = load_json(CHECKPOINT)
        fields = {"workspace", "seq", "head_hash", "issued_at", "key_id", "signature"}
        expect(isinstance(checkpoint, dict) and set(checkpoint) == fields,
               "%s is not an object of exactly %s" % (CHECKPOINT, ", ".join(sorted(fields))))
        expect(is_int(checkpoint["seq"]), "seq is not an integer")
        expect(all(isinstance(checkpoint[f], str) for f in fields - {"seq"}),
               "a field other than seq is not a string")
        return checkpoint

    def check_checkpoint_signature(self):
        key, checkpoint = self.require_key(), self.checkpoint()
        expect(checkpoint["key_id"] == self.key_id, "it names key_id %s, not this key's %s"
               % (checkpoint["key_id"], self.key_id))
        signature = b64decode(checkpoint["signature"], "signature")
        signed = canonical({k: v for k, v in checkpoint.items() if k != "signature"})
        expect(ed25519_verify(key, signed, signature), "the signature does not match it")
        return "workspace %s, seq %d, head %s" % (
            checkpoint["workspace"], checkpoint["seq"], checkpoint["head_hash"])

    def check_checkpoint_matches_attestation(self):
        checkpoint, predicate = self.checkpoint(), self.statement()["predicate"]
        for ours, theirs, value in (("workspace", "workspace", predicate["workspace"]),
                                    ("chain.seq", "seq", predicate["chain"]["seq"]),
                                    ("chain.head_hash", "head_hash",
                                     predicate["chain"]["head_hash"])):
            expect(value == checkpoint[theirs], "the attestation's %s is %r, the checkpoint's %r"
                   % (ours, value, checkpoint[theirs]))

    def events(self):
        if self.parsed_events is None:
            self.parsed_events = self.read_events()
        return self.parsed_events

    def read_events(self):
        lines = read_text(EVENTS).split("\n")
        if lines[-1] == "":
            lines.pop()
        events = []
        for n, line in enumerate(lines, 1):
            event = parse_json(line, "line %d" % n)
            expect(isinstance(event, dict) and set(event) == EVENT_KEYS,
                   "line %d is not an object of exactly %s" % (n, ", ".join(sorted(EVENT_KEYS))))
            expect(is_int(event["seq"]), "line %d: seq is not an integer" % n)
            for field in ("actor", "occurred_at", "type", "workspace_id"):
                expect(isinstance(event[field], str), "line %d: %s is not a string" % (n, field))
            expect(event["evaluation_id"] is None or isinstance(event["evaluation_id"], str),
                   "line %d: evaluation_id is neither a string nor null" % n)
            for field in ("hash", "prev_hash"):
                expect(isinstance(event[field], str) and HEX64.match(event[field]),
                       "line %d: %s is not a SHA-256 in lower-case hex" % (n, field))
            events.append(event)
        return events

    def check_chain(self):
        events, problems, previous = self.events(), [], None
        for n, event in enumerate(events, 1):
            body = {k: v for k, v in event.items() if k not in ("hash", "prev_hash")}
            digest = hashlib.sha256(AUDIT_DOMAIN + event["prev_hash"].encode("ascii")
                                    + canonical(body)).hexdigest()
            if digest != event["hash"]:
                problems.append("line %d (seq %d): the hash does not match the event (it was "
                                "changed)" % (n, event["seq"]))
            if previous is not None and event["seq"] != previous["seq"] + 1:
                problems.append("line %d: seq %d follows seq %d (events are missing or out of "
                                "order)" % (n, event["seq"], previous["seq"]))
            if previous is not None and event["prev_hash"] != previous["hash"]:
                problems.append("line %d (seq %d): prev_hash is not the hash of the line before"
                                % (n, event["seq"]))
            previous = event
        expect(not problems, summarize(problems))
        if not events:
            return "0 events"
        return "%d events, seq %d to %d, every hash and link holds" % (
            len(events), events[0]["seq"], events[-1]["seq"])

    def check_events_within_checkpoint(self):
        checkpoint, events = self.checkpoint(), self.events()
        seq, head = checkpoint["seq"], checkpoint["head_hash"]
        beyond = [e["seq"] for e in events if e["seq"] > seq]
        expect(not beyond, "seq %d is past the checkpoint's seq %d" % ((beyond or [0])[-1], seq))
        at = [e for e in events if e["seq"] == seq]
        if at:
            expect(at[0]["hash"] == head, "the event at seq %d is not the one the checkpoint "
                   "signed" % seq)
            return "the event at seq %d has the signed head hash" % seq
        return "no event past the checkpoint's seq %d" % seq

    def check_populations(self):
        """The CSV populations are the chain's: one evaluations.csv row per evaluation.created
        event and no other, one approvals.csv / receipts.csv row per approval.decided /
        receipt.recorded event (matched by audit_seq and evaluation_id)."""
        events = self.events()

        def rows(name, *columns):
            text = read_text(name)
            reader = csv.reader(io.StringIO(text, newline=""))
            header = next(reader, None)
            expect(header is not None, "%s has no header row" % name)
            missing = [c for c in columns if c not in header]
            expect(not missing, "%s has no column %s" % (name, ", ".join(missing)))
            at = [header.index(c) for c in columns]
            out = []
            for n, row in enumerate(reader, 2):
                expect(len(row) == len(header), "%s line %d has %d fields, the header %d"
                       % (name, n, len(row), len(header)))
                out.append(tuple(row[i] for i in at))
            return out

        def compare(name, listed, recorded, what):
            listed_set, recorded_set = set(listed), set(recorded)
            expect(len(listed_set) == len(listed), "%s lists a %s twice" % (name, what))
            extra = sorted(listed_set - recorded_set)
            absent = sorted(recorded_set - listed_set)
            problems = ["%s lists %s, which no audit event records" % (name, x) for x in extra]
            problems += ["%s leaves out %s, which the audit events record" % (name, x)
                         for x in absent]
            expect(not problems, summarize(problems))

        created = [e["evaluation_id"] for e in events if e["type"] == "evaluation.created"]
        evaluations = [r[0] for r in rows("evaluations.csv", "id")]
        compare("evaluations.csv", evaluations, created, "evaluation")
        counts = [len(evaluations)]
        for name, kind in (("approvals.csv", "approval.decided"),
                           ("receipts.csv", "receipt.recorded")):
            recorded = [(str(e["seq"]), e["evaluation_id"] or "") for e in events
                        if e["type"] == kind]
            listed = [(seq, ev) for ev, seq in rows(name, "evaluation_id", "audit_seq")]
            compare(name, listed, recorded, "decision")
            counts.append(len(listed))
        return ("%d evaluations, %d human decisions, %d receipts, each the audit events'"
                % tuple(counts))

    def run(self):
        self.check("SHA256SUMS digests match", self.check_sums_digests)
        self.check("SHA256SUMS lists every file", self.check_sums_cover)
        self.check("public key", self.check_public_key)
        if self.key is not None:
            self.key_id = key_id_of(self.key)
        if self.given_key is None:
            print("note the key came from the bundle itself: this proves the bundle is "
                  "consistent, not who signed it. To check that, pass --public-key with the "
                  "key from the server (GET /api/v1/audit/signing-key, its public_key_pem).")
        else:
            self.check("%s is the given key" % BUNDLE_KEY, self.check_bundle_key_is_given)
        self.check("attestation signature", self.check_attestation_signature)
        self.check("attestation statement", self.check_statement)
        self.check("attestation subjects", self.check_subjects)
        self.check("checkpoint signature", self.check_checkpoint_signature)
        self.check("checkpoint matches the attestation", self.check_checkpoint_matches_attestation)
        self.check("audit event chain", self.check_chain)
        self.check("audit events within the checkpoint", self.check_events_within_checkpoint)
        self.check("populations match the audit events", self.check_populations)
        if self.failures:
            print("NOT VERIFIED: %d check%s failed" % (self.failures,
                                                      "" if self.failures == 1 else "s"))
            return 1
        print("verified: every check passed")
        return 0


def main():
    if hasattr(sys.stdout, "reconfigure"):  # a workspace name the console cannot print
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = argparse.ArgumentParser(description="Verify this AgentNexus evidence bundle.")
    parser.add_argument("--public-key", metavar="PEM_FILE",
                        help="the server's public key (GET /api/v1/audit/signing-key)")
    args = parser.parse_args()
    given = None
    if args.public_key is not None:
        try:
            with open(args.public_key, "rb") as f:
                given = parse_public_key(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            parser.error("cannot read --public-key %s: %s" % (args.public_key, e))
        except Failure as e:
            parser.error("--public-key %s: %s" % (args.public_key, e))
    return Verifier(given, args.public_key).run()


if __name__ == "__main__":
    sys.exit(main())
