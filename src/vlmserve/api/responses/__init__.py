"""The OpenAI Responses API surface (`/v1/responses`): wire schemas, the codec onto ChatService's types, the
stream's events, stored responses."""
