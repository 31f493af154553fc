namespace NativeHeap.Tests;

/// <summary>A fresh folder under the system's temporary folder, deleted with everything in it at Dispose.</summary>
internal sealed class TempDirectory(string prefix) : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
