//! Chat templates: render `tokenizer.chat_template` (Jinja) with minijinja the way Hugging Face
//! transformers does: an environment with `trim_blocks` and `lstrip_blocks`, loop controls, the globals
//! `raise_exception` and `strftime_now`, a `tojson` filter that writes what Python's `json.dumps` writes,
//! and the context `messages`, `add_generation_prompt`, `bos_token`, `eos_token` (and the other special
//! tokens' texts). Python string and dict methods that templates call (`.strip()`, `.items()`, ...) are
//! provided as minijinja "unknown methods".

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};

use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A message as the template sees it: a dict whose keys keep Python's insertion order (role, content),
/// which `tojson` and `items()` show.
#[derive(Debug)]
struct MessageObj(ChatMessage);

impl Object for MessageObj {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.0.role.as_str())),
            "content" => Some(Value::from(self.0.content.as_str())),
            _ => None,
        }
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

/// The special tokens' texts a template may use (`bos_token`, ...); None leaves the variable undefined.
#[derive(Clone, Debug, Default)]
pub struct TemplateTokens<'a> {
    pub bos_token: Option<&'a str>,
    pub eos_token: Option<&'a str>,
    pub unk_token: Option<&'a str>,
    pub pad_token: Option<&'a str>,
}

/// Renders `template` for `messages`; with `add_generation_prompt` the template appends the header that
/// opens the assistant's turn.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    tokens: &TemplateTokens,
) -> Result<String> {
    let env = environment();
    let tmpl = env.template_from_str(template).map_err(template_error)?;
    let messages: Vec<Value> = messages.iter().map(|m| Value::from_object(MessageObj(m.clone()))).collect();
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => tokens.bos_token,
        eos_token => tokens.eos_token,
        unk_token => tokens.unk_token,
        pad_token => tokens.pad_token,
    };
    tmpl.render(ctx).map_err(template_error)
}

fn template_error(e: minijinja::Error) -> Error {
    use std::error::Error as _;
    if e.source().is_some_and(|s| s.is::<RaiseMarker>()) {
        return Error::Tokenizer(format!("chat template raised an exception: {}", e.detail().unwrap_or("")));
    }
    let mut msg = format!("chat template: {e}");
    if let Some(line) = e.line() {
        msg += &format!(" (template line {line})");
    }
    Error::Tokenizer(msg)
}

/// Instructions a chat template may execute per render (minijinja fuel).
const TEMPLATE_FUEL: u64 = 20_000_000;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) as in transformers;
    // keep_trailing_newline stays off in both
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // the template comes from the file: bound its work (a real template over a long chat needs well under 1% of
    // this; nested loops over large ranges run out instead of hanging)
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg).with_source(RaiseMarker))
    });
    env.add_function("strftime_now", |fmt: String| strftime(&fmt, now_utc()));
    env.add_filter("tojson", |v: Value, kwargs: Kwargs| -> std::result::Result<String, minijinja::Error> {
        let indent: Option<usize> = kwargs.get("indent")?;
        let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
        let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
        kwargs.assert_all_used()?;
        let opts =
            JsonOpts { indent, sort_keys: sort_keys.unwrap_or(false), ensure_ascii: ensure_ascii.unwrap_or(false) };
        let mut out = String::new();
        py_json(&v, &opts, 0, &mut out)?;
        Ok(out)
    });
    env.set_unknown_method_callback(python_method);
    env
}

/// Tags the error of `raise_exception` so it can be told apart from template bugs.
#[derive(Debug)]
struct RaiseMarker;
impl std::fmt::Display for RaiseMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raise_exception")
    }
}
impl std::error::Error for RaiseMarker {}

// ----------------------------------------------------------------------------
// Python methods on strings, dicts and lists
// ----------------------------------------------------------------------------

fn python_method(_: &State, v: &Value, method: &str, args: &[Value]) -> std::result::Result<Value, minijinja::Error> {
    let bad = || minijinja::Error::new(ErrorKind::UnknownMethod, format!("{} has no method {method}", v.kind()));
    let arg_str = |i: usize| -> Option<&str> { args.get(i).and_then(|a| a.as_str()) };
    match v.kind() {
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            let chars = arg_str(0);
            let strip_set = |c: char| chars.map_or(c.is_whitespace(), |set| set.contains(c));
            Ok(match method {
                "strip" => Value::from(s.trim_matches(strip_set)),
                "lstrip" => Value::from(s.trim_start_matches(strip_set)),
                "rstrip" => Value::from(s.trim_end_matches(strip_set)),
                "upper" => Value::from(s.to_uppercase()),
                "lower" => Value::from(s.to_lowercase()),
                "title" => Value::from(title_case(s)),
                "capitalize" => {
                    let mut c = s.chars();
                    Value::from(
                        c.next().map_or(String::new(), |f| {
                            f.to_uppercase().chain(c.flat_map(|x| x.to_lowercase())).collect()
                        }),
                    )
                }
                "startswith" => Value::from(prefixes(args).ok_or_else(bad)?.iter().any(|p| s.starts_with(p.as_str()))),
                "endswith" => Value::from(prefixes(args).ok_or_else(bad)?.iter().any(|p| s.ends_with(p.as_str()))),
                "replace" => match (arg_str(0), arg_str(1)) {
                    (Some(a), Some(b)) => Value::from(s.replace(a, b)),
                    _ => return Err(bad()),
                },
                "split" => {
                    let parts: Vec<Value> = match chars {
                        Some(sep) => s.split(sep).map(Value::from).collect(),
                        None => s.split_whitespace().map(Value::from).collect(),
                    };
                    Value::from(parts)
                }
                "count" => Value::from(arg_str(0).map_or(0, |p| {
                    if p.is_empty() {
                        s.chars().count() + 1
                    } else {
                        s.matches(p).count()
                    }
                })),
                "find" => Value::from(arg_str(0).and_then(|p| s.find(p)).map_or(-1, |b| s[..b].chars().count() as i64)),
                "join" => {
                    let items: Vec<String> = args.first().ok_or_else(bad)?.try_iter()?.map(|x| x.to_string()).collect();
                    Value::from(items.join(s))
                }
                _ => return Err(bad()),
            })
        }
        ValueKind::Map => match method {
            "items" => {
                let pairs: Vec<Value> = v
                    .try_iter()?
                    .map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        Value::from(vec![k, val])
                    })
                    .collect();
                Ok(Value::from(pairs))
            }
            "keys" => Ok(Value::from(v.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(v.try_iter()?.map(|k| v.get_item(&k).unwrap_or_default()).collect::<Vec<_>>())),
            "get" => {
                let key = args.first().ok_or_else(bad)?;
                let got = v.get_item(key)?;
                Ok(if got.is_undefined() { args.get(1).cloned().unwrap_or(Value::from(())) } else { got })
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `startswith("a")` or `startswith(("a", "b"))`
fn prefixes(args: &[Value]) -> Option<Vec<String>> {
    let a = args.first()?;
    if let Some(s) = a.as_str() {
        return Some(vec![s.to_string()]);
    }
    a.try_iter().ok().map(|it| it.filter_map(|x| x.as_str().map(str::to_string)).collect())
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if prev_letter {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_letter = c.is_alphabetic();
    }
    out
}

// ----------------------------------------------------------------------------
// tojson: Python's json.dumps
// ----------------------------------------------------------------------------

struct JsonOpts {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// Writes `v` as `json.dumps(v, ensure_ascii, indent, sort_keys)` does: ", " and ": " separators
/// without indent, "," and ": " with it.
fn py_json(v: &Value, o: &JsonOpts, level: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = o.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let sep = if o.indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let (true, Some(i)) = (v.is_integer(), v.as_i64()) {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                out.push_str(&if f.is_nan() {
                    "NaN".to_string()
                } else if f.is_infinite() {
                    if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
                } else {
                    format!("{f:?}")
                });
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or(""), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                py_json(item, o, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                match k.as_str() {
                    Some(s) => json_str(s, o.ensure_ascii, out),
                    None => json_str(&k.to_string(), o.ensure_ascii, out),
                }
                out.push_str(": ");
                py_json(&v.get_item(k)?, o, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => json_str(&v.to_string(), o.ensure_ascii, out),
    }
    Ok(())
}

fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7E) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ----------------------------------------------------------------------------
// strftime_now
// ----------------------------------------------------------------------------

/// (year, month 1-12, day 1-31, hour, minute, second, weekday 0 = Monday) in UTC.
fn now_utc() -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    civil(secs)
}

fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400) as u32;
    // days since 1970-01-01 -> proleptic Gregorian date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = (days + 3).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60, weekday)
}

fn strftime(fmt: &str, t: (i64, u32, u32, u32, u32, u32, u32)) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let (y, mo, d, h, mi, s, wd) = t;
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out += &y.to_string(),
            Some('y') => out += &format!("{:02}", y.rem_euclid(100)),
            Some('m') => out += &format!("{mo:02}"),
            Some('d') => out += &format!("{d:02}"),
            Some('e') => out += &format!("{d:2}"),
            Some('-') => match it.next() {
                Some('d') => out += &d.to_string(),
                Some('m') => out += &mo.to_string(),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out += MONTHS[(mo - 1) as usize],
            Some('b') => out += &MONTHS[(mo - 1) as usize][..3],
            Some('A') => out += DAYS[wd as usize],
            Some('a') => out += &DAYS[wd as usize][..3],
            Some('H') => out += &format!("{h:02}"),
            Some('M') => out += &format!("{mi:02}"),
            Some('S') => out += &format!("{s:02}"),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TemplateTokens<'static> {
        TemplateTokens { bos_token: Some("<s>"), eos_token: Some("</s>"), ..Default::default() }
    }

    #[test]
    fn trim_and_lstrip_blocks_like_hf() {
        // with trim_blocks the newline after a block tag goes; with lstrip_blocks the indent before it
        let t =
            "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}";
        let out = render(t, &[ChatMessage::new("user", "hi"), ChatMessage::new("assistant", "yo")], false, &tokens())
            .unwrap();
        assert_eq!(out, "U:hi\n");
    }

    #[test]
    fn python_methods_and_tojson() {
        let t = "{{ messages[0].content.strip() }}|{{ messages[0]['role'].upper() }}|{{ messages[0] | tojson }}|\
                 {% for k, v in messages[0].items() %}{{ k }}={{ v|trim }};{% endfor %}|{{ 'a,b'.split(',') | tojson }}";
        let out = render(t, &[ChatMessage::new("user", " x\"é ")], false, &tokens()).unwrap();
        assert_eq!(
            out,
            "x\"é|USER|{\"role\": \"user\", \"content\": \" x\\\"é \"}|role=user;content=x\"é;|[\"a\", \"b\"]"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = "{% if messages[0].role != 'system' %}{{ raise_exception('need a system turn') }}{% endif %}";
        let err = render(t, &[ChatMessage::new("user", "hi")], false, &tokens()).unwrap_err();
        assert!(err.to_string().contains("need a system turn"), "{err}");
    }

    #[test]
    fn loop_controls_and_bos() {
        let t = "{{ bos_token }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}";
        let out = render(t, &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")], false, &tokens()).unwrap();
        assert_eq!(out, "<s>a");
    }

    #[test]
    fn whitespace_control_namespace_and_tojson_like_jinja2() {
        // expected output computed with Python jinja2 3.1 under transformers' settings
        // (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), json.dumps-based tojson)
        let t = "{%- set ns = namespace(sys='') -%}\n{%- for m in messages -%}\n  {%- if m.role == 'system' -%}\
                 {%- set ns.sys = m.content -%}{%- endif -%}\n{%- endfor -%}\n{{ bos_token }}\n{% if ns.sys %}\n\
                 <<SYS>>{{ ns.sys | trim }}<</SYS>>\n{% endif %}\n{% for m in messages if m.role != 'system' %}\n    \
                 {% if m.role == 'user' %}\n[INST] {{ m.content.strip() }} [/INST]\n    {% else %}\n \
                 {{ m.content }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n\
                 {% if add_generation_prompt %}{{ messages[-1] | tojson }}{% endif %}\n";
        let msgs = [
            ChatMessage::new("system", "  Be brief.\n"),
            ChatMessage::new("user", " Hi \"there\" "),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Ünïcode\ttab"),
        ];
        let out = render(t, &msgs, true, &tokens()).unwrap();
        assert_eq!(
            out,
            "<s>\n<<SYS>>Be brief.<</SYS>>\n[INST] Hi \"there\" [/INST]\n Hello.</s>\n[INST] Ünïcode\ttab [/INST]\n\
             {\"role\": \"user\", \"content\": \"Ünïcode\\ttab\"}"
        );
    }

    #[test]
    fn dates() {
        // 2024-02-29 12:34:56 UTC was a Thursday
        let t = civil(1_709_210_096);
        assert_eq!(t, (2024, 2, 29, 12, 34, 56, 3));
        assert_eq!(strftime("%d %B %Y, %a %H:%M", t), "29 February 2024, Thu 12:34");
    }
}
