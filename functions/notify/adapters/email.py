"""Emails through SES (moto's SES locally)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.notify.domain.errors import DeliveryFailed


class SesEmailSender:
    def __init__(self, ses_client: Any, sender: str | None) -> None:
        self._client = ses_client
        self._sender = sender

    def send(self, to: str, subject: str, text: str) -> None:
        if self._sender is None:
            raise DeliveryFailed("no sender identity is configured for email (RAGLINE_NOTIFY_EMAIL_SENDER)")
        try:
            self._client.send_email(
                Source=self._sender,
                Destination={"ToAddresses": [to]},
                Message={"Subject": {"Data": subject}, "Body": {"Text": {"Data": text}}},
            )
        except ClientError as exc:
            # A refused message (unverified address, sandbox) is the receiver's failure, counted as such.
            if exc.response.get("Error", {}).get("Code") in {"MessageRejected", "MailFromDomainNotVerified"}:
                raise DeliveryFailed(f"SES refused the email: {exc}") from exc
            raise
