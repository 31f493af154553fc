import json
data = [{"id": i, "name": "item%d" % i, "tags": ["a", "b", str(i)], "score": i * 0.5} for i in range(200)]
for _ in range(5000):
    s = json.dumps(data)
    back = json.loads(s)
