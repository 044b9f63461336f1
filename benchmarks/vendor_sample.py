"""The documented way, one file per process: the shape of the vendor's upload sample script
(open a channel, read the file, Upload, print the talk id). Run under `xargs -P N`.

    python vendor_sample.py TARGET AUDIO_PATH   (key in env API_KEY; metadata as in the samples)
"""

import os
import sys

import grpc

from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.samples import metadata

target, path = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    data = f.read()
channel = grpc.insecure_channel(target)
stub = pb_grpc.TalkServiceStub(channel)
request = pb.UploadTalkRequest(
    metadata=pb.TalkMetadata(connection_id="demo-audio", fields=metadata(abs(hash(path)) % 1000)),
    audio=pb.AudioRequest(
        audio_metadata=pb.AudioMetadata(container_audio=pb.ContainerAudio(
            container_audio_type=pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV)),
        audio_data=pb.AudioChunk(data=data),
    ),
)
response = stub.Upload(request, metadata=(("authorization", f"Api-Key {os.environ['API_KEY']}"),))
print(response.talk_id)
