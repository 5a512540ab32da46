//! Chat messages to the encoder's input: through the model's chat template (Jinja, from
//! `t5serve.json`'s `chat_template`, rendered with minijinja as TGI does), or, without one, the
//! last user message preceded by the system instructions. T5 has no chat format of its own: the
//! fallback keeps what an instruction-tuned T5 (flan-t5) was trained on, one instruction.

use serde::Serialize;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Self::System),
            "developer" => Some(Self::Developer),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            _ => None,
        }
    }
}

/// One message, its content as plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles a template; the error says where it is invalid.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Hugging Face templates stop on a malformed conversation with `raise_exception(msg)`.
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string()).map_err(|e| format!("invalid chat_template: {e}"))?;
        Ok(Self { env })
    }

    /// The prompt for `messages`, with `add_generation_prompt` true; the error is the template's.
    pub fn render(&self, messages: &[Message], eos_token: &str) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => "",
            eos_token => eos_token,
        };
        template.render(ctx).map_err(|e| match e.kind() {
            minijinja::ErrorKind::InvalidOperation => e.detail().unwrap_or("the chat template refused").to_string(),
            _ => format!("the chat template failed: {e}"),
        })
    }
}

/// The prompt without a template: the last user message, after the system and developer
/// messages (joined by newlines) when there are any. `None` when no message is the user's.
pub fn plain_prompt(messages: &[Message]) -> Option<String> {
    let user = messages.iter().rev().find(|m| m.role == Role::User)?;
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| m.content.as_str())
        .filter(|c| !c.trim().is_empty())
        .collect();
    Some(if system.is_empty() { user.content.clone() } else { format!("{}\n{}", system.join("\n"), user.content) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, content: &str) -> Message {
        Message { role, content: content.into() }
    }

    #[test]
    fn without_a_template_the_last_user_message_follows_the_instructions() {
        let conv =
            [m(Role::System, "Be brief."), m(Role::User, "one"), m(Role::Assistant, "eins"), m(Role::User, "two")];
        assert_eq!(plain_prompt(&conv).unwrap(), "Be brief.\ntwo");
        assert_eq!(plain_prompt(&[m(Role::User, "hi")]).unwrap(), "hi");
        assert_eq!(plain_prompt(&[m(Role::System, "x")]), None);
    }

    #[test]
    fn a_template_sees_the_messages_and_can_refuse() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('no assistant turns') }}{% endif %}\
             {{ m.role }}: {{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}answer:{% endif %}",
        )
        .unwrap();
        assert_eq!(t.render(&[m(Role::User, " hi ")], "</s>").unwrap(), "user: hi\nanswer:");
        assert_eq!(t.render(&[m(Role::Assistant, "x")], "</s>").unwrap_err(), "no assistant turns");
        assert!(ChatTemplate::new("{% for %}").unwrap_err().starts_with("invalid chat_template"));
    }
}
