"""Keeping credentials and huge values out of what the audit prints.

A launch command often carries secrets: `WANDB_API_KEY=... deepspeed ...`, OpenRLHF's
`--use_wandb KEY` (its W&B API key), `--logger.wandb.key`, TRL's `--hub_token`, Llama-Factory's
`hf_hub_token=...`. The audit needs none of them, so everything it prints goes through here:

- redact_command(tokens): a command's words, with the values of credential-named environment
  assignments, `--flag value` / `--flag=value` and `key=value` overrides replaced by `***`
  (the name stays), and known token shapes replaced anywhere;
- redact_text(text): the same on free text (messages, sources, the text report);
- redact_report(data): every string of a JSON-able report (its `command` read as a command);
- shorten(text): a printed message with every long value cut to ~200 characters.

A boolean (`--use_wandb True`) and a shell reference (`$WANDB_API_KEY`) are no secret and stay.
"""
import re

MASK = "***"
MAX_VALUE_CHARS = 200
MAX_MESSAGE_CHARS = 1500

# Words of a variable or flag name that mark a credential.
_ENV_WORDS = frozenset({"KEY", "KEYS", "APIKEY", "ACCESSKEY", "SECRETKEY", "TOKEN", "AUTHTOKEN", "ACCESSTOKEN",
                        "SECRET", "SECRETS", "PASSWORD", "PASSWORDS", "PASSWD", "PASS", "AUTH", "AUTHORIZATION",
                        "CREDENTIAL", "CREDENTIALS", "API", "PAT"})
# A flag is a credential when its last word is one of these (`--hf_token`, `--logger.wandb.key`, `--api_key`),
# not when the word only starts its name (`--token_level_loss`, `--api_key_file`, `--api_base`).
_FLAG_LAST_WORDS = frozenset({"key", "apikey", "accesskey", "secretkey", "token", "authtoken", "accesstoken",
                              "secret", "password", "passwd", "auth", "authorization", "credential", "credentials"})
# ... except a dataset column (OpenRLHF's --input_key, --data.chosen_key) or a tokenizer's special token.
_NOT_SECRET_KEY_OWNERS = frozenset({"input", "output", "label", "prompt", "chosen", "rejected", "image", "images",
                                    "video", "videos", "audio", "response", "query", "answer", "system", "tools",
                                    "messages", "reward", "context", "text", "content", "role", "sort", "group",
                                    "column", "field", "dataset"})
_NOT_SECRET_TOKEN_OWNERS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "image", "video", "audio",
                                      "placeholder", "special", "start", "end", "stop", "begin", "default"})
_BOOLEAN = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off", "none", "null", ""})

# Known token shapes, replaced wherever they appear.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_])(?:"
    r"hf_[A-Za-z0-9]{30,}"                       # Hugging Face
    r"|sk-[A-Za-z0-9_-]{20,}"                    # OpenAI / Anthropic style secret keys
    r"|gh[pousr]_[A-Za-z0-9]{30,}"               # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"             # GitHub fine-grained tokens
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"                # AWS access key ids
    r"|(?<![/@])[0-9a-fA-F]{40}"                 # a W&B API key (40 hex; not a path's or a pin's commit)
    r")(?![A-Za-z0-9_])")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/:@'\"]+:[^\s/'\"]*@")
_SHELL_REFERENCE = re.compile(r"^\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)$")
# In free text: --flag=value / --flag value, NAME=value, "NAME": "value" (a JSON runtime env). A value is
# quoted (to its closing quote) or runs to the next space.
_TEXT_FLAG = re.compile(r"(?<![\w.-])(--?[A-Za-z][\w.-]*)(=|[ \t]+)(?:(['\"])([^'\"\n]*)\3|(?!-)([^\s'\"`]+))")
_TEXT_ENV = re.compile(r"(?<![\w.-])([A-Za-z_][\w.]*)(=)(?:(['\"])([^'\"\n]*)\3|([^\s'\"`]+))")
_TRAILING = re.compile(r"[),;:.\]}]+$")  # prose punctuation after a bare value: `(--use_wandb True),`
_TEXT_QUOTED_KEY = re.compile(r"(['\"])([A-Za-z_][\w.-]*)\1(\s*:\s*)(['\"])([^'\"\n]*)\4")
_LONG = r"'[^'\n]{%d,}'|\"[^\"\n]{%d,}\"|(?<!\S)\S{%d,}"


def _words(name):
    return [w for w in re.split(r"[_.\-]+", name) if w]


def _env_name_is_secret(name):
    return any(w in _ENV_WORDS or w.endswith(("PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "CREDENTIALS", "APIKEY"))
               for w in _words(name.upper()))


def _flag_name_is_secret(name):
    words = _words(name.lower())
    if words[-2:] == ["use", "wandb"]:  # OpenRLHF's --use_wandb takes the W&B API key
        return True
    if not words or words[-1] not in _FLAG_LAST_WORDS:
        return False
    owner = words[-2] if len(words) > 1 else None
    if words[-1] == "key" and owner in _NOT_SECRET_KEY_OWNERS:
        return False
    return not (words[-1] == "token" and owner in _NOT_SECRET_TOKEN_OWNERS)


def name_is_secret(name):
    """A credential-like name: an environment variable (upper case: any word counts, WANDB_API_KEY, HF_TOKEN),
    or a flag or `key=value` override (its last word counts: --hf_token, --logger.wandb.key, hf_hub_token)."""
    bare = name.lstrip("-")
    if not name.startswith("-") and bare.upper() == bare and any(c.isalpha() for c in bare):
        return _env_name_is_secret(bare)
    return _flag_name_is_secret(bare)


def _keep(value):
    """A value that is no secret even under a credential name: a boolean, empty, `***`, or a shell reference."""
    value = value.strip()
    return value.lower() in _BOOLEAN or value == MASK or bool(_SHELL_REFERENCE.match(value))


def _assignment(match):
    name, sep, quote, quoted, bare = match.groups()
    if quote:
        value, tail = quoted, ""
    else:
        cut = _TRAILING.search(bare)
        tail = cut.group(0) if cut else ""
        value = bare[:len(bare) - len(tail)]
    if not value or not name_is_secret(name) or _keep(value):
        return match.group(0)
    return f"{name}{sep}{quote}{MASK}{quote}" if quote else f"{name}{sep}{MASK}{tail}"


def _quoted_key(match):
    q1, name, colon, q2, value = match.groups()
    if not name_is_secret(name) or _keep(value):
        return match.group(0)
    return f"{q1}{name}{q1}{colon}{q2}{MASK}{q2}"


def redact_text(text):
    """Credentials in free text: known token shapes, URL user:password, and the values of credential-named
    `--flag=value`, `--flag value`, `NAME=value` and `"NAME": "value"`."""
    if not isinstance(text, str) or not text:
        return text
    text = _TEXT_QUOTED_KEY.sub(_quoted_key, text)
    text = _TEXT_FLAG.sub(_assignment, text)
    text = _TEXT_ENV.sub(_assignment, text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    return _TOKEN_SHAPES.sub(MASK, text)


_FLAG = re.compile(r"^-{1,2}[A-Za-z][\w.-]*$")
_ASSIGNED = re.compile(r"^(-{1,2}[A-Za-z][\w.-]*|[A-Za-z_][\w.]*)=(.*)$", re.S)


def redact_command(tokens):
    """A launch command's words with credential values replaced by `***` (names kept): `NAME=value`,
    `--flag=value`, `key=value`, the word after `--flag`, and known token shapes in any word."""
    if tokens is None:
        return None
    out, secret_next = [], False
    for token in tokens:
        if not isinstance(token, str):
            out.append(token)
            secret_next = False
            continue
        if secret_next:
            secret_next = False
            if not token.startswith("-") and not _keep(token):
                out.append(MASK)
                continue
        assigned = _ASSIGNED.match(token)
        if assigned and name_is_secret(assigned.group(1)) and not _keep(assigned.group(2)):
            out.append(f"{assigned.group(1)}={MASK}")
            continue
        secret_next = bool(_FLAG.match(token)) and name_is_secret(token)
        out.append(redact_text(token))
    return out


def redact_report(data, key=None):
    """Every string of a JSON-able value, keys included; a `command` list is read as a command."""
    if isinstance(data, dict):
        return {redact_text(k) if isinstance(k, str) else k: redact_report(v, k) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        if key == "command":
            return redact_command(list(data))
        return [redact_report(v) for v in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


def _cut(value, limit):
    if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
        inner = value[1:-1]
        return f"{value[0]}{inner[:limit]}{value[0]}... ({len(inner)} characters)"
    return f"{value[:limit]}... ({len(value)} characters)"


def shorten(text, limit=MAX_VALUE_CHARS, total=MAX_MESSAGE_CHARS):
    """A message with each quoted value or unbroken run longer than `limit` cut to `limit` characters and
    "... (N characters)", and the whole message kept under about `total`."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    text = re.sub(_LONG % (limit + 1, limit + 1, limit + 1), lambda m: _cut(m.group(0), limit), text)
    return _cut(text, total) if len(text) > total else text


def safe_message(text):
    """What the CLI may print of a message: redacted, then shortened (a cut never leaves half a secret)."""
    return shorten(redact_text(text))
