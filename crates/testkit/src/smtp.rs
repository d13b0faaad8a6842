//! An SMTP server for tests, speaking enough of the protocol for lettre: it keeps every message
//! so a test can read links and codes out of the delivered mail, as a person would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An SMTP server for tests: accepts every message and keeps it, so a test can read the
/// link or code out of the delivered mail as a person would.
pub struct SmtpSink {
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent: headers, blank line, body.
    pub data: String,
    /// When the server accepted it.
    pub at: Instant,
}

impl Mail {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The plain-text body (the `text/plain` part of a multipart message), its transfer
    /// encoding undone, as a mail client shows it.
    pub fn text(&self) -> String {
        self.parsed()
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default()
    }

    /// The HTML body (the `text/html` part), if the message has one.
    pub fn html(&self) -> Option<String> {
        let parsed = self.parsed()?;
        let part = parsed.html_part(0)?;
        // An HTML part of its own, not one mail-parser made up from the text.
        use mail_parser::MimeHeaders;
        part.is_content_type("text", "html")
            .then(|| parsed.body_html(0).map(|h| h.into_owned()))
            .flatten()
    }

    fn parsed(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::default().parse(self.data.as_bytes())
    }

    /// The secure link's token in the body (`…/approvals/<token>`).
    pub fn link_token(&self) -> Option<String> {
        let text = self.text();
        let at = text.find("/approvals/")? + "/approvals/".len();
        Some(
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        )
    }

    /// The first run of six digits in the body (a one-time code).
    pub fn code(&self) -> Option<String> {
        let text = self.text();
        let chars: Vec<char> = text.chars().collect();
        chars.windows(6).enumerate().find_map(|(i, w)| {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 6);
            (w.iter().all(char::is_ascii_digit)
                && !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric()))
            .then(|| w.iter().collect())
        })
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(stream, kept.clone()));
            }
        });
        SmtpSink { url, mails, task }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until `n` messages arrived (or `within` passed) and answers them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let got = self.mails();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().trim_matches(['<', '>']).to_owned();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                data.push_str(
                    l.strip_prefix('.')
                        .filter(|_| l.starts_with(".."))
                        .unwrap_or(&l),
                );
                data.push_str("\r\n");
            }
            mails.lock().unwrap().push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                at: Instant::now(),
            });
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 OK\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
