"""Where the S3 client's credentials come from.

Without `store.credentials_file`, botocore's standard chain (environment, profile, instance
role; the one boto3 and the AWS CLI use). With it, the keys of one profile of an AWS shared-credentials file, read by botocore's
own provider (its INI parser and its checks), and nothing else: neither the environment nor
an instance role can stand in for a file that is missing or wrong. The file is how a secret
reaches the sidecar without being in its environment, where the broker's user could read it
in /proc/<pid>/environ: systemd's `LoadCredential=` puts it in $CREDENTIALS_DIRECTORY,
readable by the service alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import botocore.session
from botocore.exceptions import BotoCoreError

from tiering.config import StoreConfig
from tiering.errors import ConfigError

KEY = "store.credentials_file"


def open_session(store: StoreConfig) -> botocore.session.Session:
    # botocore's session, not boto3's: the same credential chain and clients, without boto3's
    # resource layer, which the sidecar does not use and which stays resident (~2 MiB).
    session = botocore.session.Session()
    if store.credentials_file is None:
        return session
    path = store.credentials_file
    profile = os.environ.get("AWS_PROFILE") or "default"
    _check_readable(path)
    # botocore's provider, not a parser of ours: the same format and errors as the AWS CLI's.
    from botocore.credentials import SharedCredentialProvider
    try:
        credentials = SharedCredentialProvider(str(path), profile_name=profile).load()
    except BotoCoreError as exc:
        raise _error(path, f"not a valid AWS credentials file ({exc})") from None
    if credentials is None:
        raise _error(path, f"no aws_access_key_id in profile [{profile}]; the file needs "
                           "[default] (or $AWS_PROFILE) with aws_access_key_id and aws_secret_access_key")
    session.set_credentials(credentials.access_key, credentials.secret_key, credentials.token)
    return session


def _check_readable(path: Path) -> None:
    try:
        info = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _error(path, f"cannot read ({exc.strerror}); with systemd, LoadCredential= puts the file in "
                           "/run/credentials/<unit>/ (see README, Credentials)") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(path, "not a regular file")
    if info.st_mode & stat.S_IROTH:
        raise _error(path, "readable by every user: chmod o-r it (0600 or 0400), or use LoadCredential=")


def _error(path: Path, problem: str) -> ConfigError:
    return ConfigError(str(path), [f"{KEY}: {problem}"])
