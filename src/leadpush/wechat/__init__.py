"""Everything about WeChat mini-program subscribe messages: credits, formatting, login, the channel."""
