"""A stand-in for the vendor's CLI printing an IAM token: mints a short-lived emulator token.

    python token_command.py TTL_SECONDS   (secret from env EMULATOR_TOKEN_SECRET; counts calls in env TOKEN_LOG)
"""

import os
import sys

from bulk_uploader.emulator import mint_token

if os.environ.get("TOKEN_LOG"):
    with open(os.environ["TOKEN_LOG"], "a") as log:
        log.write("minted\n")
print(mint_token(os.environ["EMULATOR_TOKEN_SECRET"], float(sys.argv[1])))
