"""The gettext catalogs (``<lang>/LC_MESSAGES/messages.po`` and the compiled ``.mo``);
see docs/translating.md and course.i18n."""
