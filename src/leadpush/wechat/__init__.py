"""The mini program's WeChat side: binding a user's openid and recording subscribe-message credits."""
