"""The Anthropic Messages API surface (`/v1/messages`): wire schemas, the codec onto ChatService's types, the
stream's events, Anthropic's error shape."""
